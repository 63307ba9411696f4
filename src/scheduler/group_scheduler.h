// The facade the binding (and one day a raylet policy) calls: cluster state + policies.
// Validates every request at the boundary (std::invalid_argument with a message that says
// what was wrong), dispatches on the policy kind, records placements per group.
#pragma once

#include <memory>

#include "src/scheduler/cluster_state.h"
#include "src/scheduler/group_request.h"
#include "src/scheduler/scheduling_policy.h"

namespace irfront::scheduler {

class GroupScheduler {
 public:
  GroupScheduler();

  // Cluster membership. Unknown ids / negative or NaN cpus -> std::invalid_argument.
  // `resources`: the node's capacities of resources other than CPU ("GPU", custom
  // names); names must be non-empty and not "CPU", amounts finite and >= 0.
  void AddNode(NodeId id, double cpus, const ResourceMap& resources = {});
  void UpdateNode(NodeId id, double cpus, bool alive);  // keeps the node's resources
  void SetNodeResources(NodeId id, const ResourceMap& resources);  // replaces them
  void RemoveNode(NodeId id);  // forgets the node; groups placed on it keep their record

  // Places a group and records it (replacing an earlier record of the same group id).
  // A result that is not ok() records nothing.
  SchedulingResult Schedule(const GroupRequest& request, PolicyKind policy);

  // Records a placement decided earlier (a cached plan reused for a group of the same
  // shape): no policy runs, the group's load counts as if Schedule had placed it.
  // Throws std::invalid_argument when the sizes differ, a CPU demand is invalid, or a
  // node is unknown or dead (the caller then places the group afresh).
  void RecordPlacement(GroupId id, const std::vector<NodeId>& nodes,
                       const std::vector<double>& cpus);

  void FreeGroup(GroupId id);  // unknown id: no-op
  const ClusterState& state() const { return state_; }

 private:
  ClusterState state_;
};

}  // namespace irfront::scheduler
