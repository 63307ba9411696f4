// The placement objective shared by the policies, as small pure functions.
//
// Bytes moved for a task on node j = the sum of the bytes of its inputs not held on j
// (an input is held on j when j is one of its location nodes or the node its producer
// task was placed on). Choosing between nodes for one task:
//   minimise bytes moved; then load; then node id.
#pragma once

#include <cstdint>
#include <tuple>

#include "src/scheduler/group_request.h"

namespace irfront::scheduler {

// `total_bytes` = all input bytes of the task; `local_bytes` = those held on the node.
inline int64_t BytesMoved(int64_t total_bytes, int64_t local_bytes) {
  return total_bytes - local_bytes;
}

// One node's score for one task; smaller is better.
struct PlacementCost {
  int64_t bytes_moved = 0;
  double load = 0.0;
  NodeId node = 0;
};

// Minimise bytes moved; then load; then node id.
inline bool BetterPlacement(const PlacementCost& a, const PlacementCost& b) {
  return std::tie(a.bytes_moved, a.load, a.node) < std::tie(b.bytes_moved, b.load, b.node);
}

}  // namespace irfront::scheduler
