// Fuzzes field-table decoding with RabbitMQ's tags and the decoding limits, and checks that what
// decodes re-encodes to a fixed point (encode(decode(encode(t))) == encode(t)).
#include <kincir/rabbitmq/amqp/field_table.hpp>

#include <algorithm>     // std::equal
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint8_t
#include <cstdlib>       // std::abort
#include <span>          // input views
#include <system_error>  // std::error_code

namespace amqp = kincir::rabbitmq::amqp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::error_code ec;
  std::size_t consumed = 0;
  const amqp::FieldLimits limits{8, 4096};
  const auto table = amqp::decode_field_table(std::span<const std::uint8_t>(data, size), ec, &consumed, limits);
  if (ec) return 0;
  if (consumed > size) std::abort();

  amqp::ByteBuffer first;
  amqp::encode_field_table(table, first, ec);
  if (ec) std::abort();  // names came from short strings: they always fit
  const auto again = amqp::decode_field_table(first.span(), ec, &consumed, limits);
  if (ec || consumed != first.size()) std::abort();
  amqp::ByteBuffer second;
  amqp::encode_field_table(again, second, ec);
  if (ec || second.size() != first.size() || !std::equal(first.data(), first.data() + first.size(), second.data()))
    std::abort();
  return 0;
}
