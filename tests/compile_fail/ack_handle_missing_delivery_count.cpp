// A handle without delivery_count() is not a kincir::AckHandle.
// expect: h\.delivery_count\(\)
#include "core/archetypes.hpp"

struct Handle : kincir::BasicAckHandle {
#ifdef KINCIR_BREAK
  void delivery_count() const = delete;
#endif
};

template <kincir::AckHandle H>
void accept(H&) {}

int main() {
  Handle h;
  accept(h);
}
