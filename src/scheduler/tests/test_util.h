// Test helpers: build a scheduler with nodes, and requests from per-task input lists.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "src/scheduler/group_request.h"
#include "src/scheduler/group_scheduler.h"

namespace irfront::scheduler::testing {

// Node ids 0..n-1 (or `ids`), each with `cpus`.
inline void AddNodes(GroupScheduler* s, int n, double cpus) {
  for (int i = 0; i < n; ++i) s->AddNode(i, cpus);
}

// One input of a test task.
struct In {
  int64_t bytes = 0;
  std::vector<NodeId> nodes;
  GroupId producer_group = kNoGroup;
  int64_t producer_task = kNoTask;
};

// A request from per-task inputs; every task takes `cpus`.
inline GroupRequest MakeRequest(GroupId id, const std::vector<std::vector<In>>& tasks,
                                double cpus = 1.0, GroupId depends_on = kNoGroup) {
  GroupRequest r;
  r.group_id = id;
  r.depends_on = depends_on;
  r.input_offsets.push_back(0);
  r.location_offsets.push_back(0);
  for (const auto& inputs : tasks) {
    r.task_cpus.push_back(cpus);
    for (const In& in : inputs) {
      r.input_bytes.push_back(in.bytes);
      r.input_producer_group.push_back(in.producer_group);
      r.input_producer_task.push_back(in.producer_task);
      for (NodeId n : in.nodes) r.location_nodes.push_back(n);
      r.location_offsets.push_back(static_cast<int64_t>(r.location_nodes.size()));
    }
    r.input_offsets.push_back(static_cast<int64_t>(r.input_bytes.size()));
  }
  return r;
}

// n tasks without inputs.
inline GroupRequest PlainRequest(GroupId id, int n, double cpus = 1.0,
                                 GroupId depends_on = kNoGroup) {
  return MakeRequest(id, std::vector<std::vector<In>>(n), cpus, depends_on);
}

}  // namespace irfront::scheduler::testing
