#include "src/scheduler/placement_common.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

namespace {

constexpr double kResourceSlack = 1e-9;  // absorbs rounding in capacity / demand

bool Demands(const ResourceMap& demand) {
  for (const auto& [name, amount] : demand) {
    if (amount > 0.0) return true;
  }
  return false;
}

std::string FormatAmount(double amount) {
  std::ostringstream out;
  out << amount;
  return out.str();
}

// "GPU 1, special 0.5" (resources with amount > 0, by name).
std::string FormatDemand(const ResourceMap& demand) {
  std::string out;
  for (const auto& [name, amount] : demand) {
    if (amount <= 0.0) continue;
    if (!out.empty()) out += ", ";
    out += name + " " + FormatAmount(amount);
  }
  return out;
}

// The first demanded resource node `n` has too little of: "special 0 < 1".
std::string Shortfall(const NodeInfo& n, const ResourceMap& demand) {
  for (const auto& [name, amount] : demand) {
    if (amount <= 0.0) continue;
    auto it = n.resources.find(name);
    const double have = it == n.resources.end() ? 0.0 : it->second;
    if (std::floor(have / amount + kResourceSlack) < 1.0) {  // as in ResourceSlots
      return name + " " + FormatAmount(have) + " < " + FormatAmount(amount);
    }
  }
  return "";
}

}  // namespace

double ResourceSlots(const NodeInfo& node, const ResourceMap& demand) {
  double slots = std::numeric_limits<double>::infinity();
  for (const auto& [name, amount] : demand) {
    if (amount <= 0.0) continue;
    auto it = node.resources.find(name);
    const double have = it == node.resources.end() ? 0.0 : it->second;
    slots = std::min(slots, std::floor(have / amount + kResourceSlack));
  }
  return slots;
}

NodeView MakeNodeView(const ClusterState& state, GroupId self, double min_cpus,
                      const ResourceMap& demand) {
  NodeView view;
  const bool constrained = Demands(demand);
  for (const NodeInfo& n : state.nodes()) {
    if (!n.alive || n.cpus < min_cpus) continue;
    if (constrained) {
      const double slots = ResourceSlots(n, demand);
      if (slots < 1.0) continue;  // lacks a demanded resource: never a candidate
      view.slots.push_back(slots);
    }
    view.ids.push_back(n.id);
    view.cpus.push_back(n.cpus);
    view.load.push_back(state.Load(n.id));
  }
  if (constrained) view.task_cpus = min_cpus;
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
  for (size_t j = 0; j < view.slots.size(); ++j) {  // resource-limited nodes
    w[j] = view.task_cpus > 0.0 ? std::min(w[j], view.slots[j] * view.task_cpus)
                                : view.slots[j];
  }
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
  const ResourceMap& demand = request.task_resources;
  const bool constrained = Demands(demand);
  double largest = -1.0;   // CPUs of the largest alive node
  double eligible = -1.0;  // ... of the largest alive node with the demanded resources
  std::vector<std::string> lacking;  // "node 3: special 0 < 1", one per alive node
  size_t alive = 0;
  for (const NodeInfo& n : state.nodes()) {
    if (!n.alive) continue;
    ++alive;
    largest = std::max(largest, n.cpus);
    if (!constrained || ResourceSlots(n, demand) >= 1.0) {
      eligible = std::max(eligible, n.cpus);
    } else if (lacking.size() < 8) {
      lacking.push_back("node " + std::to_string(n.id) + ": " + Shortfall(n, demand));
    }
  }
  if (largest < 0.0) {
    return "no alive node: all " + std::to_string(state.nodes().size()) +
           " nodes of the cluster are dead; mark one alive (UpdateNode) or add nodes";
  }
  if (eligible < 0.0) {
    std::ostringstream out;
    out << "no alive node has the resources each task needs (" << FormatDemand(demand)
        << "): ";
    for (size_t k = 0; k < lacking.size(); ++k) out << (k ? "; " : "") << lacking[k];
    if (alive > lacking.size()) out << "; and " << alive - lacking.size() << " more";
    out << "; add the resources to a node or lower the demand";
    return out.str();
  }
  for (size_t i = 0; i < request.num_tasks(); ++i) {
    if (request.task_cpus[i] > eligible) {
      std::ostringstream out;
      out << "task " << i << " needs " << request.task_cpus[i] << " CPUs; the largest alive "
          << (constrained ? "node with " + FormatDemand(demand) : std::string("node"))
          << " has " << eligible;
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
