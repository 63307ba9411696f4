// The policy interface and its result type. Each policy lives in its own .h/.cc pair.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/scheduler/cluster_state.h"
#include "src/scheduler/group_request.h"

namespace irfront::scheduler {

// The outcome of placing one group: a value, never an exception.
class SchedulingResult {
 public:
  enum class Status { kSuccess, kInfeasible };

  static SchedulingResult Success(std::vector<NodeId> nodes, int64_t bytes_moved);
  // No alive node can run some task (e.g. its CPU demand exceeds every node's capacity).
  static SchedulingResult Infeasible(std::string reason);

  Status status() const { return status_; }
  bool ok() const { return status_ == Status::kSuccess; }
  const std::vector<NodeId>& nodes() const { return nodes_; }  // one per task
  int64_t bytes_moved() const { return bytes_moved_; }          // input bytes not local
  const std::map<NodeId, int64_t>& task_counts() const { return task_counts_; }
  const std::string& reason() const { return reason_; }

 private:
  SchedulingResult() = default;
  Status status_ = Status::kInfeasible;
  std::vector<NodeId> nodes_;
  int64_t bytes_moved_ = 0;
  std::map<NodeId, int64_t> task_counts_;
  std::string reason_;
};

class ISchedulingPolicy {
 public:
  virtual ~ISchedulingPolicy() = default;
  // Places every task of `request` on an alive node of `state`. Reads `state`, does not
  // modify it (the GroupScheduler records the result). The request has been validated.
  virtual SchedulingResult Schedule(const ClusterState& state,
                                    const GroupRequest& request) = 0;
};

}  // namespace irfront::scheduler
