// ThreadSanitizer suppressions of rabbitmq_test, compiled in only when KINCIR_SANITIZE is
// "thread" (the runtime asks the program for them through this hook). Each entry is a report
// that is not a data race in kincir or its tests; keep the list short, and say why each is safe.

// The name the ThreadSanitizer runtime looks up (reserved, as the runtime's own names are).
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp,readability-identifier-naming)
extern "C" const char* __tsan_default_suppressions();

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp,readability-identifier-naming)
extern "C" const char* __tsan_default_suppressions() {
  // An exception that an asynchronous operation stored in a std::future (async_publish with
  // asio::use_future failing) is caught on the test's thread and freed on the thread that drops
  // the last std::promise reference. The exception object's reference count lives in libstdc++ /
  // libsupc++, which are not built with ThreadSanitizer, so the atomic decrement that orders the
  // catch block's reads before the free is invisible to it: the report names
  // exception_ptr::_M_release freeing memory the catch block read.
  return "race:std::__exception_ptr::exception_ptr::_M_release\n";
}
