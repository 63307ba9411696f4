// The scheduler's view of the cluster: nodes (id, CPU capacity, capacities of other
// resources such as GPUs and custom resources, alive) and, per placed group, the node and
// CPU demand of each of its tasks. No Ray dependency.
//
// Other resources are capacities only (what a node has, not what is in use): they decide
// which nodes may host a group that demands them, not how loaded a node is.
//
// Load(node) is the CPU demand of the tasks of live groups (recorded, not freed) placed
// on that node. Removing a node keeps group records intact: a group placed on a removed
// node still reports that node in GroupNodes() (its objects are gone, but the record is
// the caller's to free). Preconditions (unknown ids, bad cpus) are checked by the
// GroupScheduler facade; here they are internal invariants.
#pragma once

#include <cstddef>
#include <unordered_map>
#include <vector>

#include "src/scheduler/group_request.h"

namespace irfront::scheduler {

struct NodeInfo {
  NodeId id = 0;
  double cpus = 0.0;
  bool alive = true;
  ResourceMap resources;  // capacity of each resource other than CPU (absent: 0)
};

class ClusterState {
 public:
  // Membership. Nodes stay sorted by id.
  void AddNode(NodeId id, double cpus);            // id must be new
  void UpdateNode(NodeId id, double cpus, bool alive);  // id must exist
  void RemoveNode(NodeId id);                      // id must exist
  void SetNodeResources(NodeId id, ResourceMap resources);  // id must exist; replaces

  const NodeInfo* FindNode(NodeId id) const;  // nullptr when unknown
  const std::vector<NodeInfo>& nodes() const { return nodes_; }  // sorted by id
  std::vector<NodeInfo> AliveNodes() const;                      // sorted by id

  // CPU demand of live groups' tasks on `id` (0 for an unknown node).
  double Load(NodeId id) const;

  // Records a group's placement (nodes[i], cpus[i] for task i), replacing any earlier
  // record of the same id.
  void RecordGroup(GroupId id, std::vector<NodeId> nodes, std::vector<double> cpus);
  // The node of each task of a live group; nullptr when unknown or freed.
  const std::vector<NodeId>* GroupNodes(GroupId id) const;
  // The CPU demand of each task of a live group; nullptr when unknown or freed.
  const std::vector<double>* GroupCpus(GroupId id) const;
  // Forgets a group and its load. Returns false (and does nothing) for an unknown id.
  bool FreeGroup(GroupId id);
  size_t group_count() const { return groups_.size(); }

 private:
  struct GroupRecord {
    std::vector<NodeId> nodes;
    std::vector<double> cpus;
  };
  struct NodeLoad {
    double cpus = 0.0;
    int64_t tasks = 0;  // when it drops to 0 the sum is reset to exactly 0
  };
  void AddLoad(const GroupRecord& record, int sign);

  std::vector<NodeInfo> nodes_;
  std::unordered_map<GroupId, GroupRecord> groups_;
  std::unordered_map<NodeId, NodeLoad> load_;  // kept for removed nodes too
};

}  // namespace irfront::scheduler
