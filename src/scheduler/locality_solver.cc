#include "src/scheduler/locality_solver.h"

#include "src/scheduler/index_heap.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <queue>
#include <utility>

namespace irfront::scheduler {
namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max() / 4;
constexpr int32_t kSource = -1;      // pred of a vertex reached from the new task
constexpr int32_t kViaAggregator = -1;  // route: the task goes through A
constexpr int32_t kUnassigned = -2;     // route: not placed yet

class Solver {
 public:
  Solver(const TaskLocality& loc, const std::vector<int64_t>& caps)
      : loc_(loc), caps_(caps), num_nodes_(static_cast<int32_t>(caps.size())),
        agg_(num_nodes_), sink_(num_nodes_ + 1), route_(loc.total_bytes.size(), kUnassigned),
        slot_(loc.total_bytes.size(), 0), aflow_(num_nodes_, 0), bucket_(num_nodes_),
        pi_(num_nodes_ + 2, 0), dist_(num_nodes_ + 2, kInf), settled_(num_nodes_ + 2, 0),
        pred_(num_nodes_ + 2), pred_task_(num_nodes_ + 2), pred_entry_(num_nodes_ + 2), heap_(num_nodes_ + 2) {}

  std::vector<int32_t> Solve();

 private:
  int32_t Tasks() const { return static_cast<int32_t>(loc_.total_bytes.size()); }
  // Bytes moved when task t uses candidate entry e (kViaAggregator: all its bytes).
  int64_t Cost(int32_t t, int64_t e) const {
    return e == kViaAggregator ? loc_.total_bytes[t] : loc_.total_bytes[t] - loc_.local[e];
  }
  bool HasRoom(int32_t j) const { return Room(j) > 0; }
  int64_t Room(int32_t j) const;
  int64_t BestEntry(int32_t t) const;
  void FillNoData(const std::vector<int32_t>& no_data);
  void Place(int32_t t, int64_t entry);
  void Unplace(int32_t t);
  void Augment(int32_t task);
  void RunDijkstra(int32_t task);
  void ApplyPath();
  void Relax(int32_t v, int64_t d, int32_t from, int32_t task, int64_t entry);
  void ExpandNode(int32_t v, int64_t d);
  void ExpandAggregator(int64_t d);
  std::vector<int32_t> Finish() const;

  const TaskLocality& loc_;
  const std::vector<int64_t>& caps_;
  const int32_t num_nodes_, agg_, sink_;
  std::vector<int64_t> route_;  // candidate entry, kViaAggregator or kUnassigned
  std::vector<int32_t> slot_;   // position in bucket_[node] or via_
  std::vector<int64_t> aflow_;  // units A -> node j
  std::vector<std::vector<int32_t>> bucket_;  // tasks routed directly to node j
  std::vector<int32_t> via_;                  // tasks routed through A
  std::vector<int64_t> pi_;                   // potentials: nodes, A, sink
  // Dijkstra scratch, reset through touched_.
  std::vector<int64_t> dist_;
  std::vector<char> settled_;
  std::vector<int32_t> pred_, pred_task_;
  std::vector<int64_t> pred_entry_;
  std::vector<int32_t> touched_, settled_list_;
  IndexHeap heap_;
  int32_t first_room_ = 0;  // no node below it has room (room only ever shrinks)
};

void Solver::Place(int32_t t, int64_t entry) {
  route_[t] = entry;
  std::vector<int32_t>& list = entry == kViaAggregator ? via_ : bucket_[loc_.node[entry]];
  slot_[t] = static_cast<int32_t>(list.size());
  list.push_back(t);
}

void Solver::Unplace(int32_t t) {
  if (route_[t] == kUnassigned) return;
  std::vector<int32_t>& list =
      route_[t] == kViaAggregator ? via_ : bucket_[loc_.node[route_[t]]];
  const int32_t last = list.back();
  list[slot_[t]] = last;
  slot_[last] = slot_[t];
  list.pop_back();
  route_[t] = kUnassigned;
}

inline void Solver::Relax(int32_t v, int64_t d, int32_t from, int32_t task, int64_t entry) {
  if (settled_[v] || d >= dist_[v]) return;
  if (dist_[v] == kInf) touched_.push_back(v);
  dist_[v] = d;
  pred_[v] = from;
  pred_task_[v] = task;
  pred_entry_[v] = entry;
  heap_.Push(v, d);
}

// Out of node v: each task on v may move to another of its nodes or to A; flow A -> v
// may be undone; v may take one more task (-> sink).
void Solver::ExpandNode(int32_t v, int64_t d) {
  const int64_t base = d + pi_[v];
  if (aflow_[v] > 0) Relax(agg_, base - pi_[agg_], v, -1, 0);
  // Only the cheapest task move v -> A can matter: relax A once (first task on ties, as
  // relaxing each in turn would).
  int64_t to_agg = kInf;
  int32_t agg_task = -1;
  for (int32_t t : bucket_[v]) {
    const int64_t here = Cost(t, route_[t]);
    for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
      const int32_t k = loc_.node[e];
      if (k == v) continue;
      assert(Cost(t, e) - here + pi_[v] - pi_[k] >= 0);
      Relax(k, base + Cost(t, e) - here - pi_[k], v, t, e);
    }
    const int64_t via = Cost(t, kViaAggregator) - here;
    if (via < to_agg) to_agg = via, agg_task = t;
  }
  if (agg_task >= 0) Relax(agg_, base + to_agg - pi_[agg_], v, agg_task, kViaAggregator);
}

// Out of A: a unit to any node, or a task routed through A moves to one of its nodes.
// Potentials only decrease from 0 and a node with room keeps 0, so A -> (node with room)
// is the cheapest edge out of A, and a path through A -> (full node) can never reach the
// sink sooner: only the lowest-index node with room is relaxed.
void Solver::ExpandAggregator(int64_t d) {
  const int64_t base = d + pi_[agg_];
  while (first_room_ < num_nodes_ && !HasRoom(first_room_)) ++first_room_;
  assert(first_room_ < num_nodes_);
  Relax(first_room_, base - pi_[first_room_], agg_, -1, 0);
  for (int32_t t : via_) {
    for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
      const int32_t k = loc_.node[e];
      Relax(k, base - loc_.local[e] - pi_[k], agg_, t, e);
    }
  }
}

void Solver::RunDijkstra(int32_t task) {
  for (int64_t e = loc_.offsets[task]; e < loc_.offsets[task + 1]; ++e) {
    const int32_t k = loc_.node[e];
    Relax(k, Cost(task, e) - pi_[k], kSource, task, e);
  }
  Relax(agg_, Cost(task, kViaAggregator) - pi_[agg_], kSource, task, kViaAggregator);
  while (!heap_.empty()) {
    const int32_t v = heap_.Pop();
    const int64_t d = dist_[v];
    settled_[v] = 1;
    settled_list_.push_back(v);
    if (v != agg_ && HasRoom(v)) {
      // A node with room has potential 0 = the sink's (it only ever decreases and stays
      // >= the sink's): the sink is reached at distance d, nothing can be shorter.
      assert(pi_[v] == pi_[sink_]);
      dist_[sink_] = d, pred_[sink_] = v, settled_[sink_] = 1;
      touched_.push_back(sink_);
      break;
    }
    if (v == agg_) {
      ExpandAggregator(d);
    } else {
      ExpandNode(v, d);
    }
  }
  assert(settled_[sink_]);  // caps sum to >= n and A reaches every node
}

// Moves the tasks along the path found by RunDijkstra, sink back to the source.
void Solver::ApplyPath() {
  int32_t v = pred_[sink_];
  while (v != kSource) {
    const int32_t u = pred_[v];
    const int32_t t = pred_task_[v];
    if (t >= 0) {
      Unplace(t);
      Place(t, v == agg_ ? kViaAggregator : pred_entry_[v]);
    } else if (u == agg_) {
      ++aflow_[v];  // A -> v
    } else {
      --aflow_[u];  // undo A -> u
    }
    v = u;
  }
}

void Solver::Augment(int32_t task) {
  RunDijkstra(task);
  const int64_t reach = dist_[sink_];
  for (int32_t v : settled_list_) pi_[v] += dist_[v] - reach;
  ApplyPath();
  for (int32_t v : touched_) dist_[v] = kInf, settled_[v] = 0;
  touched_.clear();
  settled_list_.clear();
  heap_.Clear();
}

std::vector<int32_t> Solver::Finish() const {
  std::vector<int32_t> node(Tasks(), -1);
  std::vector<int32_t> through;
  for (int32_t t = 0; t < Tasks(); ++t) {
    if (route_[t] >= 0) node[t] = loc_.node[route_[t]];
    else through.push_back(t);
  }
  // Units through A are interchangeable: pair tasks (index order) with nodes (id order).
  size_t next = 0;
  for (int32_t j = 0; j < num_nodes_; ++j) {
    for (int64_t u = 0; u < aflow_[j]; ++u) node[through[next++]] = j;
  }
  assert(next == through.size());
  return node;
}

int64_t Solver::Room(int32_t j) const {
  return caps_[j] - static_cast<int64_t>(bucket_[j].size()) - aflow_[j];
}

// The candidate entry with the most local bytes; ties: the node with more room left,
// then the lower node index. kViaAggregator when no node holds any of its bytes.
int64_t Solver::BestEntry(int32_t t) const {
  int64_t best = kViaAggregator;
  for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
    if (loc_.local[e] == 0) continue;
    if (best == kViaAggregator || loc_.local[e] > loc_.local[best] ||
        (loc_.local[e] == loc_.local[best] && Room(loc_.node[e]) > Room(loc_.node[best]))) {
      best = e;
    }
  }
  return best;
}

// Tasks with no local bytes cost the same everywhere: each goes to the node with the
// most room left (ties: lower index), which spreads them over the least-loaded nodes.
void Solver::FillNoData(const std::vector<int32_t>& no_data) {
  std::priority_queue<std::pair<int64_t, int32_t>> room;  // (room, -index)
  for (int32_t j = 0; j < num_nodes_; ++j) {
    if (Room(j) > 0) room.emplace(Room(j), -j);
  }
  for (int32_t t : no_data) {
    auto [left, neg] = room.top();
    room.pop();
    Place(t, kViaAggregator);
    ++aflow_[-neg];
    if (left > 1) room.emplace(left - 1, neg);
  }
}

std::vector<int32_t> Solver::Solve() {
  std::vector<int32_t> deferred, no_data;
  for (int32_t t = 0; t < Tasks(); ++t) {
    const int64_t best = BestEntry(t);
    if (best == kViaAggregator) {
      no_data.push_back(t);
    } else if (HasRoom(loc_.node[best])) {
      Place(t, best);
    } else {
      deferred.push_back(t);
    }
  }
  for (int32_t t : deferred) Augment(t);
  FillNoData(no_data);
  return Finish();
}

// Tasks renumbered so that those with the same best node (most local bytes, lowest
// index) are adjacent: a node's tasks then share cache lines when the solver scans them.
// Stable, so tasks with the same best node keep their index order.
TaskLocality GroupByBestNode(const TaskLocality& loc, int32_t num_nodes,
                             std::vector<int32_t>* order) {
  const size_t n = loc.total_bytes.size();
  std::vector<int32_t> key(n, num_nodes);  // num_nodes: no local bytes anywhere
  std::vector<int32_t> start(num_nodes + 2, 0);
  for (size_t t = 0; t < n; ++t) {
    int64_t most = 0;
    for (int64_t e = loc.offsets[t]; e < loc.offsets[t + 1]; ++e) {
      if (loc.local[e] > most) most = loc.local[e], key[t] = loc.node[e];
    }
    ++start[key[t] + 1];
  }
  for (int32_t j = 0; j <= num_nodes; ++j) start[j + 1] += start[j];
  order->assign(n, 0);
  for (size_t t = 0; t < n; ++t) (*order)[start[key[t]]++] = static_cast<int32_t>(t);
  TaskLocality out;
  out.offsets.push_back(0);
  for (int32_t t : *order) {
    out.total_bytes.push_back(loc.total_bytes[t]);
    for (int64_t e = loc.offsets[t]; e < loc.offsets[t + 1]; ++e) {
      out.node.push_back(loc.node[e]);
      out.local.push_back(loc.local[e]);
    }
    out.offsets.push_back(static_cast<int64_t>(out.node.size()));
  }
  return out;
}

}  // namespace

std::vector<int32_t> SolveLocality(const TaskLocality& locality,
                                   const std::vector<int64_t>& caps) {
  std::vector<int32_t> order;
  const TaskLocality grouped =
      GroupByBestNode(locality, static_cast<int32_t>(caps.size()), &order);
  const std::vector<int32_t> placed = Solver(grouped, caps).Solve();
  std::vector<int32_t> node(placed.size());
  for (size_t i = 0; i < placed.size(); ++i) node[order[i]] = placed[i];
  return node;
}

}  // namespace irfront::scheduler
