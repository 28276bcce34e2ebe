// A publisher without publish(topic, Message&&, std::error_code&) is not a kincir::Publisher.
// expect: p\.publish\(topic, std::move\(message\), ec\)
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
  using LoopbackBus::publish;
#ifdef KINCIR_BREAK
  void publish(std::string_view, kincir::Message&&, std::error_code&) = delete;
#endif
};

template <kincir::Publisher P>
void accept(P&) {}

int main() {
  Broken b;
  accept(b);
}
