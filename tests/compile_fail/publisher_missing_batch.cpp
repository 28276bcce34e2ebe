// A publisher that takes no batch is not a kincir::Publisher.
// expect: p\.publish\(topic, std::move\(batch\)\)
#include "core/archetypes.hpp"

struct Broken : kincir::test::LoopbackBus {
  using LoopbackBus::publish;
#ifdef KINCIR_BREAK
  void publish(std::string_view, std::vector<kincir::Message>&&) = delete;
#endif
};

template <kincir::Publisher P>
void accept(P&) {}

int main() {
  Broken b;
  accept(b);
}
