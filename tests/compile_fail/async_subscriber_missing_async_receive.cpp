// A subscriber without async_receive(token) is not a kincir::AsyncSubscriber.
// expect: s\.async_receive\(
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
#ifdef KINCIR_BREAK
  void async_receive() = delete;
#endif
};

template <kincir::AsyncSubscriber S>
void accept(S&) {}

int main() {
  Broken b;
  accept(b);
}
