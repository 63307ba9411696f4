#include "src/scheduler/pack_policy.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>

#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {
namespace {

constexpr double kSlack = 1e-9;  // absorbs rounding in CPU sums

// Dependency group's alive nodes (id order), then every other alive node (id order).
std::vector<int32_t> CandidateOrder(const ClusterState& state, const GroupRequest& request,
                                    const NodeView& view) {
  std::vector<int32_t> order;
  std::vector<char> listed(view.size(), 0);
  if (const std::vector<NodeId>* dep = state.GroupNodes(request.depends_on)) {
    std::set<NodeId> ids(dep->begin(), dep->end());
    for (NodeId id : ids) {
      const int32_t j = view.IndexOf(id);
      if (j >= 0) order.push_back(j), listed[j] = 1;
    }
  }
  for (size_t j = 0; j < view.size(); ++j) {
    if (!listed[j]) order.push_back(static_cast<int32_t>(j));
  }
  return order;
}

// The node of the single producer task named by task i's inputs, or -1.
int32_t SingleProducerNode(const ClusterState& state, const GroupRequest& request,
                           const NodeView& view, size_t i) {
  if (request.input_producer_group.empty() || request.input_offsets.empty()) return -1;
  std::set<std::pair<GroupId, int64_t>> producers;
  int64_t input = -1;
  for (int64_t e = request.input_offsets[i]; e < request.input_offsets[i + 1]; ++e) {
    if (request.input_producer_group[e] == kNoGroup) continue;
    producers.emplace(request.input_producer_group[e], request.input_producer_task[e]);
    input = e;
  }
  if (producers.size() != 1) return -1;
  const NodeId node = ProducerNode(state, request, static_cast<size_t>(input));
  return node < 0 ? -1 : view.IndexOf(node);
}

}  // namespace

SchedulingResult PackPolicy::Schedule(const ClusterState& state, const GroupRequest& request) {
  const std::string reason = FeasibilityReason(state, request);
  if (!reason.empty()) return SchedulingResult::Infeasible(reason);
  const NodeView view = MakeNodeView(state, request.group_id, /*min_cpus=*/0.0,
                                     request.task_resources);
  const std::vector<int32_t> order = CandidateOrder(state, request, view);
  std::vector<double> taken(view.size(), 0.0);
  std::vector<int64_t> count(view.size(), 0);  // this group's tasks per node
  std::vector<int32_t> assignment(request.num_tasks(), -1);
  for (size_t i = 0; i < request.num_tasks(); ++i) {
    const double need = request.task_cpus[i];
    auto can_host = [&](int32_t j) { return view.cpus[j] + kSlack >= need; };
    auto free_cpu = [&](int32_t j) { return view.cpus[j] - view.load[j] - taken[j]; };
    // A free slot: CPU left for the task and, with a resource demand, fewer of this
    // group's tasks than the node's resources run at once.
    auto has_slot = [&](int32_t j) {
      return free_cpu(j) + kSlack >= need &&
             (view.slots.empty() || static_cast<double>(count[j]) < view.slots[j]);
    };
    int32_t chosen = SingleProducerNode(state, request, view, i);
    if (chosen >= 0 && !can_host(chosen)) chosen = -1;
    for (size_t k = 0; chosen < 0 && k < order.size(); ++k) {
      if (has_slot(order[k])) chosen = order[k];
    }
    if (chosen < 0) {  // every node full: least loaded (incl. this group), lowest id
      double best = 0.0;
      for (int32_t j = 0; j < static_cast<int32_t>(view.size()); ++j) {
        const double load = view.load[j] + taken[j];
        if (can_host(j) && (chosen < 0 || load < best)) chosen = j, best = load;
      }
    }
    assignment[i] = chosen;
    taken[chosen] += need;
    ++count[chosen];
  }
  return MakeResult(view, ComputeLocality(state, request, view), assignment);
}

}  // namespace irfront::scheduler
