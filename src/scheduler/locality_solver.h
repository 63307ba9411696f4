// Exact solver for the locality transportation problem.
//
// Minimises the total bytes moved when n tasks are assigned to nodes, node j taking
// exactly shares[j] tasks (sum of shares == n). Modelled as a min-cost flow with a
// Quincy-style aggregator A so that edges stay O(inputs + nodes):
//   source -> task (cap 1); task -> node j holding some of its inputs (cost = bytes moved
//   on j); task -> A (cost = all its input bytes); A -> every node (cost 0);
//   node j -> sink (cap shares[j]).
// Algorithm: successive shortest augmenting paths, one task at a time, Dijkstra on
// reduced costs (node potentials), stopped as soon as the sink is settled. Tasks are
// only ever moved, so a task vertex is folded into the edge node->node it induces.
// Warm start: every task whose cheapest node still has room goes there (with zero
// potentials that flow is optimal for its value); tasks with no local bytes at all fill
// leftover room at the end (lowest node index first), which is optimal once every other
// task is placed. Deterministic: heap ties broken by vertex index; tasks are taken
// grouped by their best node (lowest node index first), then in index order (the grouping
// keeps a node's tasks adjacent in memory for the scans).
#pragma once

#include <cstdint>
#include <vector>

#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {

// Returns a node index (into the view the locality was computed on) per task.
std::vector<int32_t> SolveLocality(const TaskLocality& locality,
                                   const std::vector<int64_t>& shares);

}  // namespace irfront::scheduler
