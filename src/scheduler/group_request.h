// Plain-data types shared by the cluster state, the policies and the binding.
// No Ray dependency: nodes, groups and objects are integers and byte counts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace irfront::scheduler {

using NodeId = int64_t;
using GroupId = int64_t;
constexpr GroupId kNoGroup = -1;
constexpr int64_t kNoTask = -1;

// Amounts of resources other than CPU, by name: GPUs ("GPU") and custom resources
// (e.g. {"special", 2}). A node's capacities; a task's demand. CPUs are modelled apart
// (NodeInfo::cpus, GroupRequest::task_cpus).
using ResourceMap = std::map<std::string, double>;

// How a group's tasks are placed. Chosen per request.
enum class PolicyKind : int {
  kPack = 0,      // the 2018 draft's rule (see pack_policy.h)
  kLocality = 1,  // exact min bytes moved under a fair share per node (default)
  kSpread = 2,    // balance only, ignores data
  kActors = 3,    // stateful actors: placed once, balanced, with their data
};

// A group of tasks (one BSP stage), in bulk form (CSR arrays), so that the binding can
// pass numpy arrays straight through.
//   task i reads inputs [input_offsets[i], input_offsets[i+1]);
//   input j has input_bytes[j] bytes, is held by nodes
//     location_nodes[location_offsets[j] .. location_offsets[j+1]), and/or is produced by
//     task input_producer_task[j] of group input_producer_group[j] (kNoGroup / kNoTask if
//     none), in which case its location is the node that task was placed on.
//   task_resources is the demand of EVERY task of the group for resources other than CPU
//   (a constraint: a task goes only to a node whose capacity of each is >= its demand;
//   empty: none).
struct GroupRequest {
  GroupId group_id = kNoGroup;
  GroupId depends_on = kNoGroup;            // the group this one depends on, if any
  std::vector<double> task_cpus;            // size n: CPU demand per task
  ResourceMap task_resources;               // per-task demand (same for every task)
  std::vector<int64_t> input_offsets;       // size n + 1 (may be empty when no task has inputs)
  std::vector<int64_t> input_bytes;         // size m
  std::vector<GroupId> input_producer_group; // size m (or empty: no producers)
  std::vector<int64_t> input_producer_task;  // size m (or empty: no producers)
  std::vector<int64_t> location_offsets;    // size m + 1 (or empty: no known locations)
  std::vector<NodeId> location_nodes;       // size k

  size_t num_tasks() const { return task_cpus.size(); }
};

}  // namespace irfront::scheduler
