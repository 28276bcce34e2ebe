// The core types in a few lines: build a message, share its payload, read its metadata.
#include <kincir/kincir.hpp>

#include <iostream>  // std::cout
#include <string>    // payload

int main() {
  // A message owns a random id, a shared payload and string metadata.
  kincir::Message message = kincir::Message(std::string("hello, kincir")).with_metadata("id", "1");

  // Copies share the payload: no bytes are copied.
  const kincir::Message copy = message;
  std::cout << "same buffer: " << std::boolalpha << (copy.payload.data() == message.payload.data()) << '\n';

  std::cout << message << '\n';
  std::cout << "payload: " << message.payload.view() << '\n';
  std::cout << "id: " << message.metadata.get("id").value_or("?") << '\n';
}
