// Actors policy: places n stateful actors once.
//
// Minimises: the bytes the actors will read from other nodes (their inputs, e.g. the
// producer tasks of the group they reduce), with the locality solver, subject to
// balance by count: each alive node takes at most ceil(n / nodes) actors (equal weights,
// not free CPU, because actors are long-lived and usually 0-CPU). Ties: as in
// locality_policy.h.
// Assumes: a validated request; nodes that cannot host the largest actor, or lack a
// resource the actors demand (task_resources), are skipped.
#pragma once

#include "src/scheduler/locality_policy.h"

namespace irfront::scheduler {

// The locality policy with caps by count instead of by free CPU.
class ActorsPolicy : public LocalityPolicy {
 protected:
  std::vector<int64_t> Caps(const NodeView& view, int64_t n) const override;
};

}  // namespace irfront::scheduler
