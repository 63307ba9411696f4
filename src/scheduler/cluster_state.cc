#include "src/scheduler/cluster_state.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace irfront::scheduler {
namespace {

// First node whose id is >= `id`.
template <typename Vec>
auto LowerBound(Vec& nodes, NodeId id) {
  return std::lower_bound(nodes.begin(), nodes.end(), id,
                          [](const NodeInfo& n, NodeId v) { return n.id < v; });
}

}  // namespace

void ClusterState::AddNode(NodeId id, double cpus) {
  auto it = LowerBound(nodes_, id);
  assert(it == nodes_.end() || it->id != id);
  nodes_.insert(it, NodeInfo{id, cpus, /*alive=*/true, {}});
}

void ClusterState::UpdateNode(NodeId id, double cpus, bool alive) {
  auto it = LowerBound(nodes_, id);
  assert(it != nodes_.end() && it->id == id);
  it->cpus = cpus;
  it->alive = alive;
}

void ClusterState::RemoveNode(NodeId id) {
  auto it = LowerBound(nodes_, id);
  assert(it != nodes_.end() && it->id == id);
  nodes_.erase(it);
}

void ClusterState::SetNodeResources(NodeId id, ResourceMap resources) {
  auto it = LowerBound(nodes_, id);
  assert(it != nodes_.end() && it->id == id);
  it->resources = std::move(resources);
}

const NodeInfo* ClusterState::FindNode(NodeId id) const {
  auto it = LowerBound(nodes_, id);
  return (it != nodes_.end() && it->id == id) ? &*it : nullptr;
}

std::vector<NodeInfo> ClusterState::AliveNodes() const {
  std::vector<NodeInfo> alive;
  for (const NodeInfo& n : nodes_) {
    if (n.alive) alive.push_back(n);
  }
  return alive;
}

double ClusterState::Load(NodeId id) const {
  auto it = load_.find(id);
  return it == load_.end() ? 0.0 : it->second.cpus;
}

void ClusterState::RecordGroup(GroupId id, std::vector<NodeId> nodes,
                               std::vector<double> cpus) {
  assert(nodes.size() == cpus.size());
  FreeGroup(id);
  GroupRecord record{std::move(nodes), std::move(cpus)};
  AddLoad(record, +1);
  groups_.emplace(id, std::move(record));
}

const std::vector<NodeId>* ClusterState::GroupNodes(GroupId id) const {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : &it->second.nodes;
}

const std::vector<double>* ClusterState::GroupCpus(GroupId id) const {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : &it->second.cpus;
}

bool ClusterState::FreeGroup(GroupId id) {
  auto it = groups_.find(id);
  if (it == groups_.end()) return false;
  AddLoad(it->second, -1);
  groups_.erase(it);
  return true;
}

void ClusterState::AddLoad(const GroupRecord& record, int sign) {
  for (size_t i = 0; i < record.nodes.size(); ++i) {
    NodeLoad& load = load_[record.nodes[i]];
    load.cpus += sign * record.cpus[i];
    load.tasks += sign;
    if (load.tasks == 0 || load.cpus < 0.0) load.cpus = 0.0;  // no rounding residue
  }
}

}  // namespace irfront::scheduler
