// Helpers shared by the policies: the eligible nodes of a request (alive, sorted by id,
// with loads), each task's input locations over them, fair-share caps, and the result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/scheduler/cluster_state.h"
#include "src/scheduler/group_request.h"
#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

// How many tasks demanding `demand` (resources other than CPU) a node can run at once by
// its capacities: min over the demanded resources (amount > 0) of floor(capacity /
// amount); +infinity when nothing is demanded. Below 1: the node cannot host such a task.
double ResourceSlots(const NodeInfo& node, const ResourceMap& demand);

// Alive nodes that can host `min_cpus` and (when the group demands resources other than
// CPU) one task's `demand`, sorted by id. load[j] excludes the request's own earlier
// record (a group placed again replaces its record).
struct NodeView {
  std::vector<NodeId> ids;
  std::vector<double> cpus;
  std::vector<double> load;
  // With a resource demand: ResourceSlots of each node (>= 1), and the CPUs a task needs
  // (min_cpus); empty / 0 without one.
  std::vector<double> slots;
  double task_cpus = 0.0;
  // id -> view index (-1: not in the view) when the ids are dense enough (max id below
  // 4 * nodes + 1024), else empty and IndexOf falls back to a binary search.
  std::vector<int32_t> dense;
  size_t size() const { return ids.size(); }
  int32_t IndexOf(NodeId id) const;  // -1 when not in the view
};
NodeView MakeNodeView(const ClusterState& state, GroupId self, double min_cpus,
                      const ResourceMap& demand = {});

// Per task, the view nodes holding some of its inputs and how many bytes (CSR, node
// indices ascending). total_bytes[i] = all input bytes of task i.
struct TaskLocality {
  std::vector<int64_t> total_bytes;
  std::vector<int64_t> offsets;  // n + 1
  std::vector<int32_t> node;     // view index
  std::vector<int64_t> local;    // bytes of the task's inputs held on that node
  int64_t LocalBytes(size_t task, int32_t node_index) const;
};
TaskLocality ComputeLocality(const ClusterState& state, const GroupRequest& request,
                             const NodeView& view);

// The node an input is held on because its producer task was placed there, or -1
// (no producer, unknown or freed group, task out of range).
NodeId ProducerNode(const ClusterState& state, const GroupRequest& request, size_t input);

// Fair-share caps: c_j = ceil(n * w_j / sum w), computed exactly (weights in units of
// 2^-20, 128-bit integers). Falls back to equal weights when every weight is 0. A cap is
// an upper bound, not a quota: sum c_j >= n, so the group always fits.
std::vector<int64_t> FairShareCaps(const std::vector<double>& weights, int64_t n);
// Caps by free CPU: w_j = max(0, cpus_j - load_j), or cpus_j when all are 0. With a
// resource demand, w_j is at most what the node's resources can run at once:
// min(w_j, slots_j * task_cpus) (slots_j alone for 0-CPU tasks).
std::vector<int64_t> FreeCpuCaps(const NodeView& view, int64_t n);
// Caps by count (equal weights): ceil(n / nodes) each.
std::vector<int64_t> EqualCaps(const NodeView& view, int64_t n);

double MaxTaskCpus(const GroupRequest& request);
// Why the group cannot be placed at all: no alive node (a cluster state, not bad input),
// no alive node with the resources a task demands (naming the resources and what each
// node lacks), or a task needing more CPUs than every alive node that has those
// resources. Empty when it can be placed.
std::string FeasibilityReason(const ClusterState& state, const GroupRequest& request);

// Success result from view indices, with bytes moved computed from `locality`.
SchedulingResult MakeResult(const NodeView& view, const TaskLocality& locality,
                            const std::vector<int32_t>& assignment);

}  // namespace irfront::scheduler
