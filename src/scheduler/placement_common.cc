#include "src/scheduler/placement_common.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "src/scheduler/objective.h"

namespace irfront::scheduler {

int32_t NodeView::IndexOf(NodeId id) const {
  if (!dense.empty()) {
    return (id >= 0 && id < static_cast<NodeId>(dense.size())) ? dense[id] : -1;
  }
  auto it = std::lower_bound(ids.begin(), ids.end(), id);
  return (it != ids.end() && *it == id) ? static_cast<int32_t>(it - ids.begin()) : -1;
}

NodeView MakeNodeView(const ClusterState& state, GroupId self, double min_cpus) {
  NodeView view;
  for (const NodeInfo& n : state.nodes()) {
    if (!n.alive || n.cpus < min_cpus) continue;
    view.ids.push_back(n.id);
    view.cpus.push_back(n.cpus);
    view.load.push_back(state.Load(n.id));
  }
  if (!view.ids.empty() && view.ids.back() < 4 * static_cast<NodeId>(view.size()) + 1024) {
    view.dense.assign(view.ids.back() + 1, -1);
    for (size_t j = 0; j < view.size(); ++j) view.dense[view.ids[j]] = static_cast<int32_t>(j);
  }
  // The request's own earlier record is about to be replaced: do not count its load.
  const std::vector<NodeId>* own = state.GroupNodes(self);
  const std::vector<double>* own_cpus = state.GroupCpus(self);
  if (own != nullptr && own_cpus != nullptr) {
    for (size_t i = 0; i < own->size(); ++i) {
      const int32_t j = view.IndexOf((*own)[i]);
      if (j >= 0) view.load[j] = std::max(0.0, view.load[j] - (*own_cpus)[i]);
    }
  }
  return view;
}

NodeId ProducerNode(const ClusterState& state, const GroupRequest& request, size_t input) {
  if (request.input_producer_group.empty()) return -1;
  const GroupId group = request.input_producer_group[input];
  const int64_t task = request.input_producer_task[input];
  if (group == kNoGroup || task < 0) return -1;
  const std::vector<NodeId>* nodes = state.GroupNodes(group);
  if (nodes == nullptr || task >= static_cast<int64_t>(nodes->size())) return -1;
  return (*nodes)[task];
}

int64_t TaskLocality::LocalBytes(size_t task, int32_t node_index) const {
  for (int64_t c = offsets[task]; c < offsets[task + 1]; ++c) {
    if (node[c] == node_index) return local[c];
  }
  return 0;
}

TaskLocality ComputeLocality(const ClusterState& state, const GroupRequest& request,
                             const NodeView& view) {
  const size_t n = request.num_tasks();
  TaskLocality loc;
  loc.total_bytes.assign(n, 0);
  loc.offsets.assign(n + 1, 0);
  std::vector<std::pair<int32_t, int64_t>> held;  // (view index, bytes) of one task
  std::vector<int32_t> input_nodes;
  for (size_t i = 0; i < n; ++i) {
    held.clear();
    const int64_t begin = request.input_offsets.empty() ? 0 : request.input_offsets[i];
    const int64_t end = request.input_offsets.empty() ? 0 : request.input_offsets[i + 1];
    for (int64_t e = begin; e < end; ++e) {
      const int64_t bytes = request.input_bytes[e];
      loc.total_bytes[i] += bytes;
      input_nodes.clear();
      if (!request.location_offsets.empty()) {
        for (int64_t l = request.location_offsets[e]; l < request.location_offsets[e + 1]; ++l) {
          input_nodes.push_back(view.IndexOf(request.location_nodes[l]));
        }
      }
      const NodeId producer = ProducerNode(state, request, e);
      if (producer >= 0) input_nodes.push_back(view.IndexOf(producer));
      if (input_nodes.size() > 1) {
        std::sort(input_nodes.begin(), input_nodes.end());
        input_nodes.erase(std::unique(input_nodes.begin(), input_nodes.end()),
                          input_nodes.end());
      }
      for (int32_t j : input_nodes) {
        if (j >= 0) held.emplace_back(j, bytes);  // an input counts once per node
      }
    }
    if (held.size() <= 8) {  // insertion sort: the usual few inputs per task
      for (size_t a = 1; a < held.size(); ++a) {
        for (size_t b = a; b > 0 && held[b] < held[b - 1]; --b) std::swap(held[b], held[b - 1]);
      }
    } else {
      std::sort(held.begin(), held.end());
    }
    for (const auto& [j, bytes] : held) {
      const bool same = static_cast<int64_t>(loc.node.size()) > loc.offsets[i] &&
                        loc.node.back() == j;
      if (same) {
        loc.local.back() += bytes;
      } else {
        loc.node.push_back(j);
        loc.local.push_back(bytes);
      }
    }
    loc.offsets[i + 1] = static_cast<int64_t>(loc.node.size());
  }
  return loc;
}

std::vector<int64_t> FairShareCaps(const std::vector<double>& weights, int64_t n) {
  // Exact integer arithmetic on weights in units of 2^-20 (exact for integer and dyadic
  // CPU counts). Huge weights use a coarser unit so every scaled weight stays below 2^61.
  using Wide = __int128;
  const size_t m = weights.size();
  if (m == 0) return {};
  const double largest = *std::max_element(weights.begin(), weights.end());
  const int exponent = largest > 0.0 ? std::min(20, 60 - std::ilogb(largest)) : 20;
  std::vector<Wide> w(m, 0);
  Wide total = 0;
  for (size_t j = 0; j < m; ++j) {
    w[j] = static_cast<Wide>(std::llround(std::ldexp(std::max(0.0, weights[j]), exponent)));
    total += w[j];
  }
  if (total == 0) {
    w.assign(m, 1);
    total = static_cast<Wide>(m);
  }
  std::vector<int64_t> cap(m, 0);
  for (size_t j = 0; j < m; ++j) {
    const Wide scaled = static_cast<Wide>(n) * w[j];
    cap[j] = static_cast<int64_t>((scaled + total - 1) / total);  // ceil, scaled >= 0
  }
  return cap;
}

std::vector<int64_t> FreeCpuCaps(const NodeView& view, int64_t n) {
  std::vector<double> w(view.size(), 0.0);
  bool any = false;
  for (size_t j = 0; j < view.size(); ++j) {
    w[j] = std::max(0.0, view.cpus[j] - view.load[j]);
    any = any || w[j] > 0.0;
  }
  if (!any) w = view.cpus;
  return FairShareCaps(w, n);
}

std::vector<int64_t> EqualCaps(const NodeView& view, int64_t n) {
  return FairShareCaps(std::vector<double>(view.size(), 1.0), n);
}

double MaxTaskCpus(const GroupRequest& request) {
  double most = 0.0;
  for (double c : request.task_cpus) most = std::max(most, c);
  return most;
}

std::string FeasibilityReason(const ClusterState& state, const GroupRequest& request) {
  double largest = -1.0;
  for (const NodeInfo& n : state.nodes()) {
    if (n.alive) largest = std::max(largest, n.cpus);
  }
  if (largest < 0.0) {
    return "no alive node: all " + std::to_string(state.nodes().size()) +
           " nodes of the cluster are dead; mark one alive (UpdateNode) or add nodes";
  }
  for (size_t i = 0; i < request.num_tasks(); ++i) {
    if (request.task_cpus[i] > largest) {
      std::ostringstream out;
      out << "task " << i << " needs " << request.task_cpus[i]
          << " CPUs; the largest alive node has " << largest;
      return out.str();
    }
  }
  return "";
}

SchedulingResult MakeResult(const NodeView& view, const TaskLocality& locality,
                            const std::vector<int32_t>& assignment) {
  std::vector<NodeId> nodes(assignment.size());
  int64_t moved = 0;
  for (size_t i = 0; i < assignment.size(); ++i) {
    nodes[i] = view.ids[assignment[i]];
    moved += BytesMoved(locality.total_bytes[i], locality.LocalBytes(i, assignment[i]));
  }
  return SchedulingResult::Success(std::move(nodes), moved);
}

}  // namespace irfront::scheduler
