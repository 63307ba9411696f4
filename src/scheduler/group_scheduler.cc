#include "src/scheduler/group_scheduler.h"

#include <stdexcept>
#include <string>

#include "src/scheduler/actors_policy.h"
#include "src/scheduler/locality_policy.h"
#include "src/scheduler/pack_policy.h"
#include "src/scheduler/request_validation.h"
#include "src/scheduler/spread_policy.h"

namespace irfront::scheduler {
namespace {

std::string NodeName(NodeId id) { return "node " + std::to_string(id); }

// The composite: one policy per kind.
SchedulingResult Dispatch(const ClusterState& state, const GroupRequest& request,
                          PolicyKind policy) {
  switch (policy) {
    case PolicyKind::kPack: return PackPolicy().Schedule(state, request);
    case PolicyKind::kLocality: return LocalityPolicy().Schedule(state, request);
    case PolicyKind::kSpread: return SpreadPolicy().Schedule(state, request);
    case PolicyKind::kActors: return ActorsPolicy().Schedule(state, request);
  }
  throw std::invalid_argument("Schedule: unknown policy kind " +
                              std::to_string(static_cast<int>(policy)) +
                              "; expected 0 (pack), 1 (locality), 2 (spread) or 3 (actors)");
}

}  // namespace

GroupScheduler::GroupScheduler() = default;

void GroupScheduler::AddNode(NodeId id, double cpus, const ResourceMap& resources) {
  if (id < 0) throw std::invalid_argument("AddNode: node id must be >= 0; got " +
                                          std::to_string(id));
  ValidateCpus("AddNode", cpus);
  ValidateResources("AddNode", "resources", resources);
  if (state_.FindNode(id) != nullptr) {
    throw std::invalid_argument("AddNode: " + NodeName(id) +
                                " already exists; use UpdateNode to change it");
  }
  state_.AddNode(id, cpus);
  if (!resources.empty()) state_.SetNodeResources(id, resources);
}

void GroupScheduler::SetNodeResources(NodeId id, const ResourceMap& resources) {
  ValidateResources("SetNodeResources", "resources", resources);
  if (state_.FindNode(id) == nullptr) {
    throw std::invalid_argument("SetNodeResources: unknown " + NodeName(id) +
                                "; add it with AddNode first");
  }
  state_.SetNodeResources(id, resources);
}

void GroupScheduler::UpdateNode(NodeId id, double cpus, bool alive) {
  ValidateCpus("UpdateNode", cpus);
  if (state_.FindNode(id) == nullptr) {
    throw std::invalid_argument("UpdateNode: unknown " + NodeName(id) +
                                "; add it with AddNode first");
  }
  state_.UpdateNode(id, cpus, alive);
}

void GroupScheduler::RemoveNode(NodeId id) {
  if (state_.FindNode(id) == nullptr) {
    throw std::invalid_argument("RemoveNode: unknown " + NodeName(id));
  }
  state_.RemoveNode(id);
}

SchedulingResult GroupScheduler::Schedule(const GroupRequest& request, PolicyKind policy) {
  ValidateRequest(state_, request);
  SchedulingResult result = Dispatch(state_, request, policy);
  if (result.ok()) state_.RecordGroup(request.group_id, result.nodes(), request.task_cpus);
  return result;
}

void GroupScheduler::RecordPlacement(GroupId id, const std::vector<NodeId>& nodes,
                                     const std::vector<double>& cpus) {
  if (nodes.size() != cpus.size()) {
    throw std::invalid_argument("RecordPlacement: " + std::to_string(nodes.size()) +
                                " nodes for " + std::to_string(cpus.size()) +
                                " tasks; pass one node per task");
  }
  for (double c : cpus) ValidateCpus("RecordPlacement", c);
  for (NodeId n : nodes) {
    const NodeInfo* node = state_.FindNode(n);
    if (node == nullptr || !node->alive) {
      throw std::invalid_argument("RecordPlacement: " + NodeName(n) +
                                  (node == nullptr ? " is unknown" : " is dead") +
                                  "; place the group with Schedule instead");
    }
  }
  state_.RecordGroup(id, nodes, cpus);
}

void GroupScheduler::FreeGroup(GroupId id) { state_.FreeGroup(id); }

}  // namespace irfront::scheduler
