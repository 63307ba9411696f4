// Locality policy (the default).
//
// Minimises: the total bytes moved by the whole group (exact optimum, see
// locality_solver.h), subject to each alive node taking at most its fair share of the
// group: shares proportional to free CPU w_j = max(0, cpus_j - load_j) (cpus_j when every
// w_j is 0), rounded by largest remainder so that they sum to the group size (remainder
// ties -> lower node id). As the shares sum to n, every node takes exactly its share.
// Ties between optimal placements: broken deterministically by the solver (task index
// order, lowest node index first on equal path cost).
// Assumes: the request was validated; nodes that cannot host the group's largest task
// (and dead nodes) are not candidates; a group whose largest task fits no alive node is
// infeasible.
#pragma once

#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class LocalityPolicy : public ISchedulingPolicy {
 public:
  SchedulingResult Schedule(const ClusterState& state, const GroupRequest& request) override;
};

}  // namespace irfront::scheduler
