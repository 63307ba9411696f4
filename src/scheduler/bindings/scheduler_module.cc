// pybind11 declarations of the private `irfront._scheduler` module. The typed, documented
// API is python/irfront/scheduler.py; this file only converts arguments and results.
//
// Bulk inputs cross as numpy arrays (copied once into the GroupRequest vectors). Calls on
// one scheduler are serialised by a mutex; `schedule` releases the GIL while it copies
// and solves. The mutex is never waited for while holding the GIL, nor the GIL while
// holding the mutex, so two Python threads cannot deadlock here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "src/scheduler/cluster_state.h"
#include "src/scheduler/group_request.h"
#include "src/scheduler/group_scheduler.h"

namespace py = pybind11;
namespace sched = irfront::scheduler;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

// A view of a 1-D array's buffer, taken with the GIL held, read after releasing it (the
// caller's Array objects keep the buffers alive for the whole call).
template <typename T>
struct View {
  const T* data;
  size_t size;
};

template <typename T>
View<T> View1D(const Array<T>& a, const char* name) {
  if (a.ndim() != 1) {
    throw std::invalid_argument(std::string(name) + " must be a 1-D array; got " +
                                std::to_string(a.ndim()) + " dimensions");
  }
  return View<T>{a.data(), static_cast<size_t>(a.shape(0))};
}

template <typename T>
void CopyInto(const View<T>& v, std::vector<T>* out) {
  out->assign(v.data, v.data + v.size);
}

// An int64 numpy array that owns `values` (moved, not copied).
py::array_t<int64_t> ToArray(std::vector<int64_t>&& values) {
  auto* owned = new std::vector<int64_t>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>({static_cast<py::ssize_t>(owned->size())}, owned->data(),
                              free_when_done);
}

// (cpus, alive) of a known node; std::invalid_argument for an unknown one.
std::pair<double, bool> CurrentNode(const sched::ClusterState& state, sched::NodeId id) {
  const sched::NodeInfo* node = state.FindNode(id);
  if (node == nullptr) {
    throw std::invalid_argument("update_node: unknown node id " + std::to_string(id));
  }
  return {node->cpus, node->alive};
}

std::vector<std::tuple<sched::NodeId, double, bool>> NodeList(const sched::ClusterState& state) {
  std::vector<std::tuple<sched::NodeId, double, bool>> out;
  out.reserve(state.nodes().size());
  for (const sched::NodeInfo& n : state.nodes()) out.emplace_back(n.id, n.cpus, n.alive);
  return out;
}

std::optional<std::vector<int64_t>> GroupNodes(const sched::ClusterState& state,
                                               sched::GroupId id) {
  const std::vector<sched::NodeId>* nodes = state.GroupNodes(id);
  if (nodes == nullptr) return std::nullopt;
  return std::vector<int64_t>(nodes->begin(), nodes->end());
}

struct ScheduleOutcome {
  bool ok = false;
  py::array_t<int64_t> nodes;
  int64_t bytes_moved = 0;
  std::map<sched::NodeId, int64_t> task_counts;
  std::string reason;
  int64_t solve_ns = 0;  // wall time of GroupScheduler::Schedule (steady_clock)
};

// The core plus the mutex that serialises calls on it.
class PyGroupScheduler {
 public:
  template <typename F>
  auto Locked(F&& f) {
    py::gil_scoped_release no_gil;
    std::lock_guard<std::mutex> lock(mu_);
    return f(core_);
  }

  ScheduleOutcome Schedule(sched::GroupId group_id, sched::GroupId depends_on, int policy,
                           const Array<double>& task_cpus, const Array<int64_t>& input_offsets,
                           const Array<int64_t>& input_bytes,
                           const Array<int64_t>& input_producer_group,
                           const Array<int64_t>& input_producer_task,
                           const Array<int64_t>& location_offsets,
                           const Array<int64_t>& location_nodes,
                           const sched::ResourceMap& task_resources) {
    if (policy < static_cast<int>(sched::PolicyKind::kPack) ||
        policy > static_cast<int>(sched::PolicyKind::kActors)) {
      throw std::invalid_argument("policy must be 0 (pack), 1 (locality), 2 (spread) or "
                                  "3 (actors); got " + std::to_string(policy));
    }
    const auto cpus = View1D(task_cpus, "task_cpus");
    const auto offsets = View1D(input_offsets, "input_offsets");
    const auto bytes = View1D(input_bytes, "input_bytes");
    const auto pgroup = View1D(input_producer_group, "input_producer_group");
    const auto ptask = View1D(input_producer_task, "input_producer_task");
    const auto loffsets = View1D(location_offsets, "location_offsets");
    const auto lnodes = View1D(location_nodes, "location_nodes");

    sched::SchedulingResult result = sched::SchedulingResult::Infeasible("");
    int64_t solve_ns = 0;
    {
      py::gil_scoped_release no_gil;
      std::lock_guard<std::mutex> lock(mu_);
      // request_ is reused across calls: its vectors keep their capacity, so large
      // groups are copied into warm memory instead of freshly faulted pages.
      request_.group_id = group_id;
      request_.depends_on = depends_on;
      CopyInto(cpus, &request_.task_cpus);
      CopyInto(offsets, &request_.input_offsets);
      CopyInto(bytes, &request_.input_bytes);
      CopyInto(pgroup, &request_.input_producer_group);
      CopyInto(ptask, &request_.input_producer_task);
      CopyInto(loffsets, &request_.location_offsets);
      CopyInto(lnodes, &request_.location_nodes);
      request_.task_resources = task_resources;
      const auto start = std::chrono::steady_clock::now();
      result = core_.Schedule(request_, static_cast<sched::PolicyKind>(policy));
      solve_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count();
    }
    ScheduleOutcome out;
    out.ok = result.ok();
    out.nodes = ToArray(std::vector<int64_t>(result.nodes()));
    out.bytes_moved = result.bytes_moved();
    out.task_counts = result.task_counts();
    out.reason = result.reason();
    out.solve_ns = solve_ns;
    return out;
  }

 private:
  std::mutex mu_;
  sched::GroupScheduler core_;
  sched::GroupRequest request_;  // guarded by mu_; reused by Schedule
};

}  // namespace

PYBIND11_MODULE(_scheduler, m) {
  m.doc() = "irfront's C++ group scheduler (private; use irfront.scheduler)";

  py::class_<ScheduleOutcome>(m, "ScheduleOutcome")
      .def_readonly("ok", &ScheduleOutcome::ok)
      .def_readonly("nodes", &ScheduleOutcome::nodes)
      .def_readonly("bytes_moved", &ScheduleOutcome::bytes_moved)
      .def_readonly("task_counts", &ScheduleOutcome::task_counts)
      .def_readonly("reason", &ScheduleOutcome::reason)
      .def_readonly("solve_ns", &ScheduleOutcome::solve_ns);

  py::class_<PyGroupScheduler>(m, "GroupScheduler")
      .def(py::init<>())
      .def("add_node",
           [](PyGroupScheduler& s, sched::NodeId id, double cpus,
              const sched::ResourceMap& resources) {
             s.Locked([&](sched::GroupScheduler& c) { c.AddNode(id, cpus, resources); });
           },
           py::arg("node_id"), py::arg("cpus"), py::arg("resources") = sched::ResourceMap{})
      .def("set_node_resources",
           [](PyGroupScheduler& s, sched::NodeId id, const sched::ResourceMap& resources) {
             s.Locked([&](sched::GroupScheduler& c) { c.SetNodeResources(id, resources); });
           },
           py::arg("node_id"), py::arg("resources"))
      .def("node_resources",
           [](PyGroupScheduler& s, sched::NodeId id) {
             return s.Locked([&](sched::GroupScheduler& c) {
               const sched::NodeInfo* node = c.state().FindNode(id);
               if (node == nullptr) {
                 throw std::invalid_argument("node_resources: unknown node id " +
                                             std::to_string(id));
               }
               return node->resources;
             });
           },
           py::arg("node_id"))
      .def("update_node",
           [](PyGroupScheduler& s, sched::NodeId id, std::optional<double> cpus,
              std::optional<bool> alive) {
             s.Locked([&](sched::GroupScheduler& c) {
               const auto current = CurrentNode(c.state(), id);  // throws if unknown
               c.UpdateNode(id, cpus.value_or(current.first), alive.value_or(current.second));
             });
           },
           py::arg("node_id"), py::arg("cpus") = py::none(), py::arg("alive") = py::none())
      .def("remove_node",
           [](PyGroupScheduler& s, sched::NodeId id) {
             s.Locked([&](sched::GroupScheduler& c) { c.RemoveNode(id); });
           },
           py::arg("node_id"))
      .def("nodes",
           [](PyGroupScheduler& s) {
             return s.Locked([](sched::GroupScheduler& c) { return NodeList(c.state()); });
           })
      .def("schedule", &PyGroupScheduler::Schedule, py::arg("group_id"),
           py::arg("depends_on"), py::arg("policy"), py::arg("task_cpus"),
           py::arg("input_offsets"), py::arg("input_bytes"), py::arg("input_producer_group"),
           py::arg("input_producer_task"), py::arg("location_offsets"),
           py::arg("location_nodes"), py::arg("task_resources") = sched::ResourceMap{})
      .def("record_placement",
           [](PyGroupScheduler& s, sched::GroupId id, const Array<int64_t>& nodes,
              const Array<double>& cpus) {
             const auto n = View1D(nodes, "nodes");
             const auto c = View1D(cpus, "cpus");
             std::vector<sched::NodeId> node_vec(n.data, n.data + n.size);
             std::vector<double> cpu_vec(c.data, c.data + c.size);
             s.Locked([&](sched::GroupScheduler& core) {
               core.RecordPlacement(id, node_vec, cpu_vec);
             });
           },
           py::arg("group_id"), py::arg("nodes"), py::arg("cpus"))
      .def("free_group",
           [](PyGroupScheduler& s, sched::GroupId id) {
             s.Locked([&](sched::GroupScheduler& c) { c.FreeGroup(id); });
           },
           py::arg("group_id"))
      .def("group_count",
           [](PyGroupScheduler& s) {
             return s.Locked([](sched::GroupScheduler& c) {
               return static_cast<int64_t>(c.state().group_count());
             });
           })
      .def("group_nodes",
           [](PyGroupScheduler& s, sched::GroupId id) -> py::object {
             auto nodes = s.Locked([&](sched::GroupScheduler& c) {
               return GroupNodes(c.state(), id);
             });
             if (!nodes) return py::none();
             return ToArray(std::move(*nodes));
           },
           py::arg("group_id"));
}
