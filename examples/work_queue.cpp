// A work queue: workers in one consumer group share a topic's jobs, ack what they finish and nack
// what fails, with a reason; a job that keeps failing is dead-lettered after the subscription's
// `max_deliveries`, carrying that reason, and the broker's logger and statistics show what would
// otherwise go unseen.
//
//   work_queue [jobs] [workers]     (defaults: 1000 jobs, 3 workers; every 100th job is poison)

#include <kincir/kincir.hpp>
#include <kincir/log/fmt_logger.hpp>

#include <atomic>   // counters shared by the workers
#include <chrono>   // receive timeouts
#include <cstdio>   // std::printf
#include <cstdlib>  // std::atoi
#include <string>   // job payloads
#include <thread>   // workers
#include <vector>   // the worker threads

namespace {

bool is_poison(const kincir::Message& job) { return job.payload.view().starts_with("poison"); }

}  // namespace

int main(int argc, char** argv) {
  const int jobs = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int workers = argc > 2 ? std::atoi(argv[2]) : 3;
  if (jobs < 1 || workers < 1) {
    std::fprintf(stderr, "usage: work_queue [jobs >= 1] [workers >= 1]\n");
    return 2;
  }

  // Warnings (a publisher stalled by a slow worker, a drop) go to stderr.
  kincir::FmtLogger logger(kincir::LogLevel::warn);
  kincir::memory::BrokerConfig config;
  config.max_unacked = 16;  // per worker: deliveries it may hold before acking
  config.logger = &logger;
  kincir::memory::InMemoryBroker broker(config);

  // Subscribe before publishing: a topic without subscribers drops what is published to it.
  kincir::memory::InMemorySubscriber dead_letters(broker);
  dead_letters.subscribe("jobs.dead");
  // Retry and dead-lettering belong to the subscription (the broker's values are the defaults).
  kincir::memory::SubscriptionOptions retry;
  retry.max_deliveries = 3;
  retry.dead_letter_topic = "jobs.dead";
  retry.requeue_delay = std::chrono::milliseconds(1);  // a failed job waits a little; others go on
  std::vector<kincir::memory::InMemoryAckSubscriber> group;
  for (int w = 0; w < workers; ++w) {
    group.emplace_back(broker);
    group.back().subscribe("jobs", "workers", retry);
  }

  std::atomic<int> done{0};
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& worker : group) {
    threads.emplace_back([&worker, &done, &failures, &stop] {
      while (!stop.load()) {
        auto delivery = worker.receive_with_ack_for(std::chrono::milliseconds(50));
        if (!delivery) continue;
        auto& [job, handle] = *delivery;
        if (is_poison(job)) {
          failures.fetch_add(1);
          // Redelivered, dead-lettered after 3 deliveries with this reason in its metadata.
          worker.nack(handle, /*requeue=*/true, "poison: cannot be processed");
        } else {
          done.fetch_add(1);
          worker.ack(handle);
        }
      }
    });
  }

  // Workers run while the jobs are published: a publisher more than max_queue_size jobs ahead of
  // the slowest worker waits for it (and is reported through the logger if it waits long).
  kincir::memory::InMemoryPublisher publisher(broker);
  int poison = 0;
  for (int i = 0; i < jobs; ++i) {
    const bool bad = i % 100 == 99;
    poison += bad ? 1 : 0;
    publisher.publish("jobs", kincir::Message((bad ? "poison " : "job ") + std::to_string(i)));
  }

  // Wait for every good job to be done and every poison job to be dead-lettered.
  int dead = 0;
  int with_reason = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((done.load() < jobs - poison || dead < poison) && std::chrono::steady_clock::now() < give_up) {
    if (auto letter = dead_letters.receive_for(std::chrono::milliseconds(50))) {
      ++dead;
      if (letter->metadata.get("x-kincir-death-reason") == "poison: cannot be processed") ++with_reason;
    }
  }
  stop = true;
  for (auto& t : threads) t.join();

  const auto stats = broker.stats();
  std::printf("%d jobs done by %d workers, %d poison jobs dead-lettered after %d failed deliveries\n", done.load(),
              workers, dead, failures.load());
  std::printf("broker: published %llu, redelivered %llu, dead-lettered %llu, dropped %llu\n",
              static_cast<unsigned long long>(stats.published), static_cast<unsigned long long>(stats.redelivered),
              static_cast<unsigned long long>(stats.dead_lettered), static_cast<unsigned long long>(stats.dropped));
  const bool ok =
      done.load() == jobs - poison && dead == poison && with_reason == poison && failures.load() == 3 * poison;
  std::printf("%s\n", ok ? "every job done once, every poison job dead-lettered" : "FAILED");
  return ok ? 0 : 1;
}
