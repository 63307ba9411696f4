// Spread policy: balance only, ignores data.
//
// Each alive node takes at most its fair-share cap of the group (free-CPU caps, as in
// locality_policy.h); tasks are dealt in index order round-robin over the nodes in id
// order, skipping nodes whose cap is used up. With equal caps the counts differ by at
// most one (lower ids take the extra tasks).
// Minimises: imbalance under the caps. Ties: node id order. Assumes: a validated
// request; nodes that cannot host the group's largest task, or lack a resource the group
// demands (task_resources), are skipped (caps as in FreeCpuCaps: at most what a node's
// resources run at once).
#pragma once

#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class SpreadPolicy : public ISchedulingPolicy {
 public:
  SchedulingResult Schedule(const ClusterState& state, const GroupRequest& request) override;
};

}  // namespace irfront::scheduler
