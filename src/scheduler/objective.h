// The placement objective shared by the policies, as a small pure function.
//
// Bytes moved for a task on node j = the sum of the bytes of its inputs not held on j
// (an input is held on j when j is one of its location nodes or the node its producer
// task was placed on). The locality and actors policies minimise the group's total
// exactly, each node taking at most its fair-share cap. Among placements with equally few
// bytes moved, no secondary objective is searched (that would need load-dependent,
// convex costs in the flow); the solver's order breaks the ties (locality_solver.h):
// a task's best node by local bytes, then the node with more room left under its cap,
// then the lower node id; tasks that use no local bytes (none held anywhere, or moved off
// their nodes) go last to the nodes with the most room left (lower id first).
#pragma once

#include <cstdint>

namespace irfront::scheduler {

// `total_bytes` = all input bytes of the task; `local_bytes` = those held on the node.
inline int64_t BytesMoved(int64_t total_bytes, int64_t local_bytes) {
  return total_bytes - local_bytes;
}

}  // namespace irfront::scheduler
