#include "src/scheduler/scheduling_policy.h"

#include <utility>

namespace irfront::scheduler {

SchedulingResult SchedulingResult::Success(std::vector<NodeId> nodes, int64_t bytes_moved) {
  SchedulingResult result;
  result.status_ = Status::kSuccess;
  for (NodeId node : nodes) ++result.task_counts_[node];
  result.nodes_ = std::move(nodes);
  result.bytes_moved_ = bytes_moved;
  return result;
}

SchedulingResult SchedulingResult::Infeasible(std::string reason) {
  SchedulingResult result;
  result.status_ = Status::kInfeasible;
  result.reason_ = std::move(reason);
  return result;
}

}  // namespace irfront::scheduler
