// Links kincir::rabbitmq: its include paths must bring standalone Asio.
#include <asio/version.hpp>
#include <kincir/kincir.hpp>

#include <cstdio>  // std::printf

int main() {
  std::printf("kincir::rabbitmq consumer with Asio %d\n", ASIO_VERSION);
  return ASIO_VERSION >= 102200 ? 0 : 1;
}
