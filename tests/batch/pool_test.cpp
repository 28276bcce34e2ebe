#include <kincir/pool.hpp>

#include "support/catch.hpp"

#include <atomic>  // counting wrong results in threads
#include <set>     // distinct ids
#include <string>  // payloads
#include <thread>  // threads sharing a pool
#include <vector>  // threads

#include "support/alloc_counter.hpp"

using kincir::Bytes;
using kincir::Message;
using kincir::MessagePool;

TEST_CASE("get_message gives a fresh id, the payload and no metadata", "[pool]") {
  MessagePool pool(8);
  Message first = pool.get_message(Bytes::copy_from("one"));
  first.with_metadata("k", "v");
  const auto first_id = first.uuid;
  pool.return_message(std::move(first));
  Message again = pool.get_message(Bytes::copy_from("two"));
  CHECK(again.payload.view() == "two");
  CHECK(again.metadata.empty());
  CHECK(again.uuid != first_id);
  CHECK(again.uuid.version() == 4);
}

TEST_CASE("return_message releases the payload at once", "[pool]") {
  MessagePool pool(8);
  const Bytes payload = Bytes::copy_from("shared payload");
  Message m = pool.get_message(payload);
  CHECK(payload.use_count() == 2);
  pool.return_message(std::move(m));
  CHECK(payload.use_count() == 1);
}

TEST_CASE("a reused shell needs no allocation for metadata", "[pool]") {
  MessagePool pool(8);
  Message m = pool.get_message(Bytes::from_static("x"));
  m.with_metadata("key", "value");  // short entries: stored inside the message
  pool.return_message(std::move(m));

  const kincir::test::AllocScope scope;
  Message reused = pool.get_message(Bytes::from_static("y"));
  reused.with_metadata("key", "other");
  CHECK(scope.allocations() == 0);
  pool.return_message(std::move(reused));

  // Plain construction needs none either: short metadata is stored inside the message.
  const kincir::test::AllocScope plain_scope;
  Message plain(Bytes::from_static("z"));
  plain.with_metadata("key", "value");
  CHECK(plain_scope.allocations() == 0);
}

TEST_CASE("the pool is bounded", "[pool]") {
  MessagePool pool(4);
  std::vector<Message> messages;
  messages.reserve(100);
  for (int i = 0; i < 100; ++i) messages.push_back(pool.get_message(Bytes::copy_from(std::to_string(i))));
  for (auto& m : messages) pool.return_message(std::move(m));
  CHECK(pool.size() <= 4);
  CHECK(pool.thread_cached() <= 4);

  MessagePool none(0);
  none.return_message(Message(Bytes::from_static("dropped")));
  CHECK(none.size() == 0);
  CHECK(none.thread_cached() == 0);
  CHECK(none.get_message(Bytes::from_static("p")).payload.view() == "p");
}

TEST_CASE("threads share a pool", "[pool][concurrency]") {
  MessagePool pool(64);
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::set<kincir::Uuid>> ids(kThreads);
  std::atomic<int> wrong{0};  // Catch2 assertions are not thread-safe: count in the threads
  {
    std::vector<std::jthread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&pool, &ids, &wrong, t] {
        std::vector<Message> held;
        for (int i = 0; i < kRounds; ++i) {
          Message m = pool.get_message(Bytes::copy_from(std::to_string(i)));
          if (m.payload.view() != std::to_string(i) || !m.metadata.empty()) wrong.fetch_add(1);
          m.with_metadata("thread", std::to_string(t));
          ids[static_cast<std::size_t>(t)].insert(m.uuid);
          held.push_back(std::move(m));
          if (held.size() == 50) {  // return in bursts so shells move through the shared list
            for (auto& h : held) pool.return_message(std::move(h));
            held.clear();
          }
        }
      });
    }
  }
  CHECK(wrong.load() == 0);
  CHECK(pool.size() <= 64);
  std::set<kincir::Uuid> all;
  for (const auto& s : ids) all.insert(s.begin(), s.end());
  CHECK(all.size() == static_cast<std::size_t>(kThreads) * kRounds);  // every message got its own id
}
