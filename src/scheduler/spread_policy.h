// Spread policy: balance only, ignores data.
//
// Each alive node gets its fair share of the group (free-CPU shares, largest remainder,
// as in locality_policy.h); tasks are dealt in index order round-robin over the nodes in
// id order, skipping nodes whose share is used up.
// Minimises: imbalance against the shares. Ties: node id order. Assumes: a validated
// request; nodes that cannot host the group's largest task are skipped.
#pragma once

#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class SpreadPolicy : public ISchedulingPolicy {
 public:
  SchedulingResult Schedule(const ClusterState& state, const GroupRequest& request) override;
};

}  // namespace irfront::scheduler
