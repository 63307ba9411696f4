// Boundary checks of the GroupScheduler: each throws std::invalid_argument with a message
// that names what was wrong, what was given and the expected form.
#pragma once

#include "src/scheduler/cluster_state.h"
#include "src/scheduler/group_request.h"

namespace irfront::scheduler {

// Largest total of input bytes in one request (keeps solver sums far from overflow).
constexpr int64_t kMaxRequestBytes = int64_t{1} << 50;

void ValidateCpus(const char* where, double cpus);
// Resource maps (node capacities, task demands): names non-empty and not "CPU" (CPUs are
// modelled apart), amounts finite and >= 0.
void ValidateResources(const char* where, const char* name, const ResourceMap& resources);
void ValidateRequest(const ClusterState& state, const GroupRequest& request);

}  // namespace irfront::scheduler
