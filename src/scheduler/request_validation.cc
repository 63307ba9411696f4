#include "src/scheduler/request_validation.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace irfront::scheduler {
namespace {

[[noreturn]] void Fail(const std::string& message) {
  throw std::invalid_argument("GroupRequest: " + message);
}

// CSR offsets: empty (allowed only when `items` is 0 and `optional`), or `rows` + 1
// entries, starting at 0, non-decreasing, ending at `items`.
void ValidateOffsets(const char* name, const std::vector<int64_t>& offsets, size_t rows,
                     const char* row_name, size_t items, const char* item_name) {
  if (offsets.empty()) {
    if (items == 0) return;
    std::ostringstream out;
    out << name << " is empty but " << item_name << " has " << items
        << " entries; expected " << rows + 1 << " offsets (" << row_name << " + 1)";
    Fail(out.str());
  }
  if (offsets.size() != rows + 1) {
    std::ostringstream out;
    out << name << " has " << offsets.size() << " entries for " << rows << " " << row_name
        << "; expected " << rows + 1 << " (" << row_name << " + 1)";
    Fail(out.str());
  }
  if (offsets.front() != 0) {
    Fail(std::string(name) + " must start at 0; got " + std::to_string(offsets.front()));
  }
  for (size_t r = 0; r < rows; ++r) {
    if (offsets[r + 1] < offsets[r]) {
      std::ostringstream out;
      out << name << " must be non-decreasing; got " << name << "[" << r + 1
          << "] = " << offsets[r + 1] << " < " << name << "[" << r << "] = " << offsets[r];
      Fail(out.str());
    }
  }
  if (offsets.back() != static_cast<int64_t>(items)) {
    std::ostringstream out;
    out << name << " must end at the length of " << item_name << " (" << items
        << "); got " << offsets.back();
    Fail(out.str());
  }
}

void ValidateInputs(const GroupRequest& r) {
  const size_t m = r.input_bytes.size();
  ValidateOffsets("input_offsets", r.input_offsets, r.num_tasks(), "tasks", m, "input_bytes");
  int64_t total = 0;
  for (size_t e = 0; e < m; ++e) {
    if (r.input_bytes[e] < 0 || r.input_bytes[e] > kMaxRequestBytes - total) {
      Fail("input_bytes[" + std::to_string(e) + "] = " + std::to_string(r.input_bytes[e]) +
           "; expected bytes >= 0, at most 2^50 in all");
    }
    total += r.input_bytes[e];
  }
  const size_t groups = r.input_producer_group.size(), tasks = r.input_producer_task.size();
  if (groups != tasks || (groups != 0 && groups != m)) {
    Fail("input_producer_group and input_producer_task have " + std::to_string(groups) +
         " and " + std::to_string(tasks) + " entries; expected both " + std::to_string(m) +
         " (one per input) or both empty");
  }
  for (size_t e = 0; e < groups; ++e) {
    const GroupId g = r.input_producer_group[e];
    const int64_t t = r.input_producer_task[e];
    if (g < kNoGroup || (g != kNoGroup && t < 0)) {
      Fail("input " + std::to_string(e) + " names producer (" + std::to_string(g) + ", " +
           std::to_string(t) + "); expected (group >= 0, task >= 0) or group -1 for none");
    }
  }
}

void ValidateLocations(const ClusterState& state, const GroupRequest& r) {
  ValidateOffsets("location_offsets", r.location_offsets, r.input_bytes.size(), "inputs",
                  r.location_nodes.size(), "location_nodes");
  // Known ids as a bitmap when they are dense enough, else a binary search per location.
  const std::vector<NodeInfo>& nodes = state.nodes();
  std::vector<char> known;
  if (!nodes.empty() && nodes.back().id < 4 * static_cast<NodeId>(nodes.size()) + 1024) {
    known.assign(nodes.back().id + 1, 0);
    for (const NodeInfo& n : nodes) known[n.id] = 1;
  }
  auto is_known = [&](NodeId id) {
    if (known.empty()) return state.FindNode(id) != nullptr;
    return id >= 0 && id < static_cast<NodeId>(known.size()) && known[id] != 0;
  };
  for (size_t l = 0; l < r.location_nodes.size(); ++l) {
    if (!is_known(r.location_nodes[l])) {
      Fail("location_nodes[" + std::to_string(l) + "] = " +
           std::to_string(r.location_nodes[l]) +
           " is not a node of the cluster; add it with AddNode first");
    }
  }
}

}  // namespace

void ValidateCpus(const char* where, double cpus) {
  if (!std::isfinite(cpus) || cpus < 0.0) {
    std::ostringstream out;
    out << where << ": cpus must be a finite number >= 0; got " << cpus;
    throw std::invalid_argument(out.str());
  }
}

void ValidateResources(const char* where, const char* name, const ResourceMap& resources) {
  for (const auto& [resource, amount] : resources) {
    std::ostringstream out;
    if (resource.empty()) {
      out << where << ": " << name << " has an empty resource name; expected names such "
          << "as \"GPU\" or a custom resource";
    } else if (resource == "CPU") {
      out << where << ": " << name << " names \"CPU\"; CPUs are given apart (cpus, "
          << "task_cpus), not as a resource";
    } else if (!std::isfinite(amount) || amount < 0.0) {
      out << where << ": " << name << "[\"" << resource << "\"] = " << amount
          << "; expected a finite amount >= 0";
    } else {
      continue;
    }
    throw std::invalid_argument(out.str());
  }
}

void ValidateRequest(const ClusterState& state, const GroupRequest& r) {
  // No node at all is a usage error; nodes that are all dead are a cluster state, which
  // the policies report as SchedulingResult::Infeasible.
  if (state.nodes().empty()) {
    throw std::invalid_argument(
        "GroupScheduler: empty cluster: add nodes with add_node (C++: AddNode)");
  }
  if (r.group_id < 0) Fail("group_id must be >= 0; got " + std::to_string(r.group_id));
  if (r.depends_on < kNoGroup) {
    Fail("depends_on must be a group id >= 0 or -1 for none; got " +
         std::to_string(r.depends_on));
  }
  for (size_t i = 0; i < r.num_tasks(); ++i) {
    if (!std::isfinite(r.task_cpus[i]) || r.task_cpus[i] < 0.0) {
      std::ostringstream out;
      out << "task_cpus[" << i << "] = " << r.task_cpus[i]
          << "; expected a finite number >= 0";
      Fail(out.str());
    }
  }
  ValidateResources("GroupRequest", "task_resources", r.task_resources);
  ValidateInputs(r);
  ValidateLocations(state, r);
}

}  // namespace irfront::scheduler
