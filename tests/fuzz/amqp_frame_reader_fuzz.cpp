// Fuzzes the frame reader and everything that decodes a frame's payload: methods (every class
// the client knows) and content headers. Input: the first byte picks frame_max, the rest is a
// byte stream from the server.
#include <kincir/rabbitmq/amqp/frame.hpp>

#include <kincir/rabbitmq/amqp/methods.hpp>
#include <kincir/rabbitmq/amqp/properties.hpp>

#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint8_t
#include <cstdlib>       // std::abort
#include <span>          // input views
#include <system_error>  // std::error_code

namespace amqp = kincir::rabbitmq::amqp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // 4096 (the pre-tune limit), RabbitMQ's 131072, or no limit.
  constexpr std::uint32_t kLimits[] = {amqp::kFrameMinSize, amqp::kDefaultFrameMax, 0};
  const amqp::FrameReader reader(kLimits[data[0] % 3]);
  std::span<const std::uint8_t> rest(data + 1, size - 1);
  while (!rest.empty()) {
    std::error_code ec;
    const auto r = reader.parse(rest, ec);
    if (r.status != amqp::ParseStatus::complete) {
      // need_more must ask for more than there is, within the limit; an error consumes nothing.
      if (r.status == amqp::ParseStatus::need_more && r.size <= rest.size()) std::abort();
      if (r.status == amqp::ParseStatus::error && !ec) std::abort();
      break;
    }
    if (r.size > rest.size() || r.frame.payload.size() + amqp::kFrameOverhead != r.size) std::abort();
    if (reader.frame_max() != 0 && r.size > reader.frame_max()) std::abort();
    if (r.frame.type == amqp::FrameType::method) {
      amqp::Method m;
      const auto id = amqp::decode_method(r.frame.payload, m, ec);
      if (!ec && amqp::method_id(m) != id) std::abort();
    } else if (r.frame.type == amqp::FrameType::header) {
      (void)amqp::decode_content_header(r.frame.payload, ec);
    }
    rest = rest.subspan(r.size);
  }
  return 0;
}
