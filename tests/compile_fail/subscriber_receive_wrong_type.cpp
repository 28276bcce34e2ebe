// A subscriber whose receive() does not return a Message is not a kincir::Subscriber.
// expect: s\.receive\(\).*(convertible_to|does not satisfy|not satisfied)
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
  using LoopbackBus::receive;
#ifdef KINCIR_BREAK
  int receive() { return 0; }
#endif
};

template <kincir::Subscriber S>
void accept(S&) {}

int main() {
  Broken b;
  accept(b);
}
