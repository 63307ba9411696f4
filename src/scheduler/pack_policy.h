// Pack policy: the 2018 draft's rule, exactly.
//
// For each task in index order:
//  1. a task whose inputs name exactly one producer task goes where that producer went
//     (if that node is alive and can host the task);
//  2. else the first node with a free CPU slot for this group, trying first the nodes of
//     the group it depends on (where that group's tasks were placed, in id order), then
//     the other alive nodes in id order. Free slots on j = floor((cpus_j - load_j -
//     CPU already taken on j by this group's earlier tasks) / task_cpus) (a 0-CPU task
//     fits while that free CPU is >= 0); with a resource demand (GPUs, custom
//     resources), also fewer of this group's tasks on j than j's resources run at once;
//  3. when every node is full, the least-loaded node (load including this group's tasks
//     so far; ties -> lowest id) among those that can host the task.
// Minimises: nothing globally; keeps stages on their dependency's nodes. Ignores bytes.
// Only nodes with the group's demanded resources (task_resources) are candidates, in
// every step. Assumes: a validated request; a task larger than every alive node with
// those resources (or no such node) is infeasible.
#pragma once

#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class PackPolicy : public ISchedulingPolicy {
 public:
  SchedulingResult Schedule(const ClusterState& state, const GroupRequest& request) override;
};

}  // namespace irfront::scheduler
