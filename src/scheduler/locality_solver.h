// Exact solver for the locality transportation problem.
//
// Minimises the total bytes moved when n tasks are assigned to nodes, node j taking at
// most caps[j] tasks (sum of caps >= n). Modelled as a min-cost flow with a Quincy-style
// aggregator A so that edges stay O(inputs + nodes):
//   source -> task (cap 1); task -> node j holding some of its inputs (cost = bytes moved
//   on j); task -> A (cost = all its input bytes); A -> every node (cost 0);
//   node j -> sink (cap caps[j]).
// Algorithm: successive shortest augmenting paths, one task at a time, Dijkstra on
// reduced costs (node potentials), stopped at the first settled node with room (it has
// the sink's potential). Tasks are only ever moved, so a task vertex is folded into the
// node -> node edge it induces.
// Warm start: every task whose best node (most local bytes; ties: more room left, then
// lower node index) still has room goes there (with zero potentials that flow is optimal
// for its value); the others are augmented in turn. Tasks with no local bytes at all are
// placed last, each on the node with the most room left (ties: lower index), which is
// optimal once every other task is placed and spreads them over the least-loaded nodes.
// Ties between equally cheap placements are not otherwise searched: they follow this
// order. Deterministic: heap ties broken by vertex index; tasks are taken grouped by
// their best node by local bytes (lowest node index first), then in index order (the
// grouping keeps a node's tasks adjacent in memory for the scans).
#pragma once

#include <cstdint>
#include <vector>

#include "src/scheduler/placement_common.h"

namespace irfront::scheduler {

// Returns a node index (into the view the locality was computed on) per task.
std::vector<int32_t> SolveLocality(const TaskLocality& locality,
                                   const std::vector<int64_t>& caps);

}  // namespace irfront::scheduler
