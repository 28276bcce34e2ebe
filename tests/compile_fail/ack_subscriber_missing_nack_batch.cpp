// A subscriber that cannot nack a batch is not a kincir::AckSubscriber.
// expect: s\.nack_batch\(hs, requeue\)
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
  using LoopbackBus::nack_batch;
#ifdef KINCIR_BREAK
  void nack_batch(std::span<const handle_type>, bool) = delete;
#endif
};

template <kincir::AckSubscriber S>
void accept(S&) {}

int main() {
  Broken b;
  accept(b);
}
