#include "src/scheduler/locality_policy.h"

#include <string>

#include "src/scheduler/locality_solver.h"
#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {

SchedulingResult LocalityPolicy::Schedule(const ClusterState& state,
                                          const GroupRequest& request) {
  const std::string reason = FeasibilityReason(state, request);
  if (!reason.empty()) return SchedulingResult::Infeasible(reason);
  const NodeView view = MakeNodeView(state, request.group_id, MaxTaskCpus(request),
                                     request.task_resources);
  const TaskLocality locality = ComputeLocality(state, request, view);
  const auto caps = Caps(view, static_cast<int64_t>(request.num_tasks()));
  return MakeResult(view, locality, SolveLocality(locality, caps));
}

std::vector<int64_t> LocalityPolicy::Caps(const NodeView& view, int64_t n) const {
  return FreeCpuCaps(view, n);
}

}  // namespace irfront::scheduler
