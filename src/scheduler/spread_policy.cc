#include "src/scheduler/spread_policy.h"

#include <string>

#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {

SchedulingResult SpreadPolicy::Schedule(const ClusterState& state,
                                        const GroupRequest& request) {
  const std::string reason = FeasibilityReason(state, request);
  if (!reason.empty()) return SchedulingResult::Infeasible(reason);
  const NodeView view = MakeNodeView(state, request.group_id, MaxTaskCpus(request),
                                     request.task_resources);
  const size_t n = request.num_tasks();
  std::vector<int64_t> left = FreeCpuCaps(view, static_cast<int64_t>(n));
  std::vector<int32_t> assignment(n, 0);
  size_t j = 0;
  for (size_t i = 0; i < n; ++i) {
    while (left[j] == 0) j = (j + 1) % view.size();  // caps sum to >= n: terminates
    assignment[i] = static_cast<int32_t>(j);
    --left[j];
    j = (j + 1) % view.size();
  }
  return MakeResult(view, ComputeLocality(state, request, view), assignment);
}

}  // namespace irfront::scheduler
