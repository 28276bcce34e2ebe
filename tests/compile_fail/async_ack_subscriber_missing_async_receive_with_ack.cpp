// An ack subscriber without async_receive_with_ack(token) is not a kincir::AsyncAckSubscriber.
// expect: s\.async_receive_with_ack\(
#include "core/archetypes.hpp"

struct Subscriber : kincir::test::LoopbackBus {
#ifndef KINCIR_BREAK
  template <class Handler>
  void async_receive_with_ack(Handler&&) {}
#endif
};

template <kincir::AsyncAckSubscriber S>
void accept(S&) {}

int main() {
  Subscriber s;
  accept(s);
}
