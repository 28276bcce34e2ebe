// The sans-I/O AMQP codec: encoding publishes (basic.publish + content header + 1 KiB body,
// the body borrowed, never copied) and decoding deliveries (the body sliced from the read
// buffer). Target: >= 5 million 1 KiB publishes encoded per second per core.
#include <kincir/rabbitmq/amqp/channel.hpp>
#include <kincir/rabbitmq/amqp/codec.hpp>
#include <kincir/rabbitmq/amqp/content.hpp>
#include <kincir/rabbitmq/amqp/frame.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>       // std::uint8_t
#include <span>          // buffers
#include <string>        // names
#include <system_error>  // std::error_code
#include <vector>        // bodies, buffer lists

namespace amqp = kincir::rabbitmq::amqp;

namespace {

constexpr std::size_t kBodySize = 1024;

amqp::BasicProperties typical_properties() {
  amqp::BasicProperties p;
  p.content_type = "application/octet-stream";
  p.delivery_mode = 2;
  p.message_id = "123e4567-e89b-12d3-a456-426614174000";
  p.timestamp = 1700000000;
  return p;
}

amqp::BasicPublish typical_publish() {
  amqp::BasicPublish m;
  m.exchange = "orders";
  m.routing_key = "orders.created.eu-west";
  return m;
}

/// One publish per iteration, as a gathering write would send it: frames encoded into a
/// reused buffer, then the scatter-gather list built.
void BM_EncodePublish(benchmark::State& state) {
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  const auto publish = typical_publish();
  const auto props = typical_properties();
  amqp::OutputBuffer out;
  std::vector<std::span<const std::uint8_t>> buffers;
  std::error_code ec;
  for (auto _ : state) {
    out.clear();
    amqp::encode_publish(out, 1, publish, props, body, amqp::kDefaultFrameMax, ec);
    out.buffers(buffers);
    benchmark::DoNotOptimize(buffers.data());
    benchmark::ClobberMemory();
  }
  if (ec) state.SkipWithError("encoding failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * (out.size())));
  state.counters["copied_bytes_per_msg"] = static_cast<double>(out.bytes().size());
}
BENCHMARK(BM_EncodePublish);

/// A batch of publishes through the channel state machine (confirm mode: tags assigned),
/// encoded into one output buffer as the writer would flush them.
void BM_PublishBatchConfirmMode(benchmark::State& state) {
  const std::size_t batch = static_cast<std::size_t>(state.range(0));
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  const auto publish = typical_publish();
  const auto props = typical_properties();
  amqp::ChannelState st(1, amqp::kDefaultFrameMax);
  std::error_code ec;
  amqp::open_channel(st, ec);
  st.phase = amqp::ChannelPhase::open;
  st.pending.clear();
  amqp::send_method(st, amqp::ConfirmSelect{}, ec);
  std::vector<amqp::TagRange> settled;
  std::vector<std::span<const std::uint8_t>> buffers;
  for (auto _ : state) {
    st.out.clear();
    std::uint64_t last = 0;
    for (std::size_t i = 0; i < batch; ++i) last = amqp::publish(st, publish, props, body, ec);
    st.out.buffers(buffers);
    benchmark::DoNotOptimize(buffers.data());
    settled.clear();
    st.confirms.settle(last, true, settled);  // the broker's multiple ack
  }
  if (ec) state.SkipWithError("publish failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_PublishBatchConfirmMode)->Arg(100);

/// A delivery (basic.deliver + header + 1 KiB body) decoded from the read buffer: frame
/// parsing, method and property decoding, reassembly. The body is a slice of the buffer.
void BM_DecodeDelivery(benchmark::State& state) {
  // What the server sends: encoded with the codec's own encoders.
  amqp::OutputBuffer wire;
  std::error_code ec;
  amqp::BasicDeliver deliver;
  deliver.consumer_tag = "amq.ctag-Vq2sXDc9QpOy4SLrAbGnNw";
  deliver.delivery_tag = 1;
  deliver.exchange = "orders";
  deliver.routing_key = "orders.created.eu-west";
  amqp::encode_method_frame(wire.bytes(), 1, deliver, ec);
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  amqp::encode_content(wire, 1, typical_properties(), body, amqp::kDefaultFrameMax, ec);
  const kincir::Bytes read_buffer(wire.flatten());

  amqp::ChannelState st(1, amqp::kDefaultFrameMax);
  st.phase = amqp::ChannelPhase::open;
  const amqp::FrameReader reader(amqp::kDefaultFrameMax);
  std::size_t delivered = 0;
  bool zero_copy = true;
  for (auto _ : state) {
    std::span<const std::uint8_t> rest = read_buffer.span();
    while (!rest.empty()) {
      const auto r = reader.parse(rest, ec);
      const auto action = amqp::resume(st, amqp::Event::received(r.frame, &read_buffer));
      if (action.kind == amqp::Action::Kind::delivery) {
        ++delivered;
        zero_copy &= st.delivery.body.data() >= read_buffer.data() &&
                     st.delivery.body.data() < read_buffer.data() + read_buffer.size();
        benchmark::DoNotOptimize(st.delivery.body.data());
      }
      rest = rest.subspan(r.size);
    }
  }
  if (delivered != static_cast<std::size_t>(state.iterations())) state.SkipWithError("deliveries lost");
  if (!zero_copy) state.SkipWithError("the body was copied");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * read_buffer.size()));
}
BENCHMARK(BM_DecodeDelivery);

/// The server's direction: a delivery (basic.deliver + header + 1 KiB body) encoded, as the
/// test server and the fuzz seeds do.
void BM_EncodeDelivery(benchmark::State& state) {
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  const auto props = typical_properties();
  amqp::BasicDeliver deliver;
  deliver.consumer_tag = "amq.ctag-Vq2sXDc9QpOy4SLrAbGnNw";
  deliver.exchange = "orders";
  deliver.routing_key = "orders.created.eu-west";
  amqp::OutputBuffer out;
  std::error_code ec;
  for (auto _ : state) {
    out.clear();
    ++deliver.delivery_tag;
    amqp::encode_method_frame(out.bytes(), 1, deliver, ec);
    amqp::encode_content(out, 1, props, body, amqp::kDefaultFrameMax, ec);
    benchmark::DoNotOptimize(out.bytes().data());
  }
  if (ec) state.SkipWithError("encoding failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_EncodeDelivery);

/// A publish decoded from its frames (what a broker or a test server does): frame parsing,
/// basic.publish, content header and a body sliced from the buffer.
void BM_DecodePublish(benchmark::State& state) {
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  amqp::OutputBuffer wire;
  std::error_code ec;
  amqp::encode_publish(wire, 1, typical_publish(), typical_properties(), body, amqp::kDefaultFrameMax, ec);
  const kincir::Bytes read_buffer(wire.flatten());
  const amqp::FrameReader reader(amqp::kDefaultFrameMax);
  amqp::BasicPublish publish;
  amqp::ContentAssembler content;
  std::size_t decoded = 0;
  for (auto _ : state) {
    std::span<const std::uint8_t> rest = read_buffer.span();
    auto r = reader.parse(rest, ec);
    amqp::decode_method_as(r.frame.payload, publish, ec);
    content.begin();
    rest = rest.subspan(r.size);
    while (!rest.empty()) {
      r = reader.parse(rest, ec);
      if (content.feed(r.frame, &read_buffer, ec)) {
        const kincir::Bytes message = content.take_body();
        decoded += message.size() == kBodySize ? 1 : 0;
        benchmark::DoNotOptimize(message.data());
      }
      rest = rest.subspan(r.size);
    }
  }
  if (ec || decoded != static_cast<std::size_t>(state.iterations())) state.SkipWithError("decoding failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_DecodePublish);

/// Frame splitting alone over a buffer of many frames.
void BM_FrameReader(benchmark::State& state) {
  amqp::OutputBuffer wire;
  std::error_code ec;
  const std::vector<std::uint8_t> body(kBodySize, 0x5A);
  for (int i = 0; i < 100; ++i) amqp::encode_publish(wire, 1, typical_publish(), {}, body, 0, ec);
  const auto bytes = wire.flatten();
  const amqp::FrameReader reader(0);
  for (auto _ : state) {
    std::span<const std::uint8_t> rest(bytes);
    std::size_t frames = 0;
    while (!rest.empty()) {
      const auto r = reader.parse(rest, ec);
      rest = rest.subspan(r.size);
      ++frames;
    }
    benchmark::DoNotOptimize(frames);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 300));
}
BENCHMARK(BM_FrameReader);

}  // namespace

BENCHMARK_MAIN();
