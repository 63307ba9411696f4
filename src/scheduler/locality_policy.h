// Locality policy (the default).
//
// Minimises: the total bytes moved by the whole group (exact optimum, see
// locality_solver.h), subject to each alive node taking at most its fair share of the
// group: the cap c_j = ceil(n * w_j / sum w), w_j = free CPU max(0, cpus_j - load_j)
// (cpus_j when every w_j is 0), computed exactly. Caps are upper bounds (sum c_j >= n):
// the solver chooses which nodes take fewer. With equal free CPU, max/mean load is
// below 1 + nodes/tasks.
// Ties between optimal placements: broken deterministically by the solver's order, not
// by a searched secondary objective (see locality_solver.h).
// Resources other than CPU (task_resources: GPUs, custom resources) are a constraint:
// nodes without the demanded capacity are not candidates, and a node's weight is at most
// what its resources run at once (slots_j * task CPUs; see FreeCpuCaps).
// Assumes: the request was validated; nodes that cannot host the group's largest task
// (and dead nodes) are not candidates; a group whose largest task fits no alive node
// with the demanded resources is infeasible.
#pragma once

#include <cstdint>
#include <vector>

#include "src/scheduler/placement_common.h"
#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class LocalityPolicy : public ISchedulingPolicy {
 public:
  SchedulingResult Schedule(const ClusterState& state, const GroupRequest& request) override;

 protected:
  // The most tasks each candidate node may take (sum >= n). Here: by free CPU.
  virtual std::vector<int64_t> Caps(const NodeView& view, int64_t n) const;
};

}  // namespace irfront::scheduler
