// Placement speed of the C++ core: random groups (each input on one random node, sizes
// 1 KB..1 MB), a fresh scheduler per run, median / min / max wall time of Schedule().
// Usage: placement_bench [tasks nodes inputs runs policy]  (policy: locality|spread|pack|actors)
// Without arguments it runs the standard table. Prints one line per configuration.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "src/scheduler/group_scheduler.h"

namespace sched = irfront::scheduler;

namespace {

sched::GroupRequest RandomRequest(int tasks, int nodes, int inputs, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> node(0, nodes - 1), bytes(1 << 10, 1 << 20);
  sched::GroupRequest r;
  r.group_id = 1;
  r.task_cpus.assign(tasks, 1.0);
  r.input_offsets.push_back(0);
  r.location_offsets.push_back(0);
  for (int t = 0; t < tasks; ++t) {
    for (int e = 0; e < inputs; ++e) {
      r.input_bytes.push_back(bytes(rng));
      r.location_nodes.push_back(node(rng));
      r.location_offsets.push_back(static_cast<int64_t>(r.location_nodes.size()));
    }
    r.input_offsets.push_back(static_cast<int64_t>(r.input_bytes.size()));
  }
  return r;
}

sched::PolicyKind ParsePolicy(const std::string& name) {
  if (name == "spread") return sched::PolicyKind::kSpread;
  if (name == "pack") return sched::PolicyKind::kPack;
  if (name == "actors") return sched::PolicyKind::kActors;
  return sched::PolicyKind::kLocality;
}

void Run(int tasks, int nodes, int inputs, int runs, const std::string& policy) {
  std::vector<double> ms;
  int64_t moved = 0;
  for (int run = 0; run < runs; ++run) {
    std::mt19937_64 rng(1234 + run);
    const sched::GroupRequest request = RandomRequest(tasks, nodes, inputs, rng);
    sched::GroupScheduler scheduler;
    for (int j = 0; j < nodes; ++j) scheduler.AddNode(j, 8.0);
    const auto start = std::chrono::steady_clock::now();
    const sched::SchedulingResult result = scheduler.Schedule(request, ParsePolicy(policy));
    const auto end = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    moved = result.bytes_moved();
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-8s tasks=%-7d nodes=%-5d inputs=%d runs=%-3d median=%9.2f ms  min=%9.2f ms"
              "  max=%9.2f ms  bytes_moved(last)=%lld\n",
              policy.c_str(), tasks, nodes, inputs, runs, ms[ms.size() / 2], ms.front(),
              ms.back(), static_cast<long long>(moved));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 6) {
    Run(std::atoi(argv[1]), std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]),
        argv[5]);
    return 0;
  }
  Run(1000, 64, 3, 21, "locality");
  Run(10000, 1024, 3, 21, "locality");
  Run(10000, 1024, 3, 11, "spread");
  Run(10000, 1024, 3, 11, "pack");
  Run(10000, 1024, 3, 11, "actors");
  Run(100000, 1024, 3, 3, "locality");
  return 0;
}
