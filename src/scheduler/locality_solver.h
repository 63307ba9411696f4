// Exact solver for the locality transportation problem.
//
// Minimises the total bytes moved when n tasks are assigned to nodes, node j taking at
// most caps[j] tasks (sum of caps >= n). Equivalently it maximises the local bytes used:
// a max-weight b-matching of tasks to nodes over the (task, node holding some of its
// inputs) pairs; a task left unmatched uses no local bytes and costs the same anywhere,
// so unmatched tasks are placed last, each on the node with the most room left (ties:
// lower index), which sum caps >= n always allows.
// Modelled as a min-cost flow over the nodes plus a terminal U ("unmatched"): a new task
// enters at one of its nodes (cost = bytes moved there) or at U (all its bytes); a full
// node passes a unit on by moving one of its tasks to another of its nodes or to U. A node
// with room and U are terminals.
// Algorithm: successive shortest augmenting paths, one task at a time, Dijkstra on
// reduced costs (node potentials), stopped at the first settled terminal (terminals keep
// potential 0, the sink's). Tasks are only ever moved, so a task is folded into the
// node -> node edge it induces.
// Out of a full node only the cheapest move to each target matters. Two ways to find it:
// a scan of the node's moves kept sorted by extra bytes (the scan stops at the first move
// no shorter than the best terminal reached so far), or, with very many tasks per node,
// a move index: per (node, target) pair a lazy min-heap of its tasks' moves. Relaxations
// no shorter than the best terminal reached so far are dropped (reduced costs are >= 0).
// Warm start: every task whose best node (most local bytes; ties: more room left, then
// lower node index) still has room goes there (with zero potentials that is optimal for
// the tasks placed), tasks with the largest regret (best minus second-best local bytes)
// first; the others are augmented in turn (their paths tend to be short).
// Ties between equally cheap placements are not otherwise searched: they follow this
// order. Deterministic: heap ties broken by vertex (and task) index; tasks are taken
// grouped by their best node by local bytes (lowest node index first), then by regret
// (largest first), then in index order.
#pragma once

#include <cstdint>
#include <vector>

#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {

// How the solver finds the cheapest move off a full node (the result's cost is the same).
enum class MoveIndex {
  kAuto,     // the index when nodes <= kMaxIndexedNodes and tasks >=
             // kMinTasksPerNodeIndexed per node, else the scan
  kScan,     // scan the node's moves, sorted by extra bytes
  kIndexed,  // per (node, target) lazy heaps
};
constexpr int32_t kMaxIndexedNodes = 256;
constexpr int64_t kMinTasksPerNodeIndexed = 1000;

// Returns a node index (into the view the locality was computed on) per task.
std::vector<int32_t> SolveLocality(const TaskLocality& locality,
                                   const std::vector<int64_t>& caps,
                                   MoveIndex index = MoveIndex::kAuto);

}  // namespace irfront::scheduler
