// A subscriber without try_receive() is not a kincir::Subscriber.
// expect: s\.try_receive\(\)
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
#ifdef KINCIR_BREAK
  void try_receive() = delete;
#endif
};

template <kincir::Subscriber S>
void accept(S&) {}

int main() {
  Broken b;
  accept(b);
}
