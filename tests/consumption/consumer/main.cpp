// Uses kincir's public API the way an application would; exits non-zero if anything is off.
#include <kincir/kincir.hpp>

#include <cstdio>  // std::printf
#include <string>  // payload

int main() {
  const kincir::Message m = kincir::Message(std::string("hello")).with_metadata("id", "1");
  const bool ok = m.payload.view() == "hello" && m.metadata.get("id") == "1" && m.uuid.version() == 4 &&
                  kincir::Uuid::parse(m.uuid.to_string()) == m.uuid;
  std::printf("kincir %s consumer: %s\n", KINCIR_VERSION_STRING, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
