#include "src/scheduler/locality_solver.h"

#include "src/scheduler/index_heap.h"

#include <algorithm>
#include <cassert>
#include <functional>
#include <limits>
#include <queue>
#include <utility>

namespace irfront::scheduler {
namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max() / 4;
constexpr int32_t kSource = -1;      // pred of a vertex reached from the new task
constexpr int64_t kUnmatched = -1;   // route: no local bytes used (placed at the end)
constexpr int64_t kUnassigned = -2;  // route: not placed yet

// One way to take a task off node v: move it to `target` (a node or U) at `key` extra
// bytes moved. Valid while the task's stamp is unchanged (it has not moved since).
struct Move {
  int64_t key;
  int32_t task;
  uint32_t stamp;
  bool operator>(const Move& o) const {
    return key > o.key || (key == o.key && task > o.task);
  }
};

// Scan mode: one move of a task on node v, in v's list sorted by (key, task, target).
struct ListedMove {
  int64_t key;     // extra bytes moved
  int32_t task;
  int32_t target;  // a node, or U
  int64_t entry;   // the task's candidate entry for target, kUnmatched for U
  bool operator<(const ListedMove& o) const {
    return key != o.key ? key < o.key : task != o.task ? task < o.task : target < o.target;
  }
};

class Solver {
 public:
  Solver(const TaskLocality& loc, const std::vector<int64_t>& caps, bool indexed)
      : loc_(loc), caps_(caps), m_(static_cast<int32_t>(caps.size())), u_(m_),
        indexed_(indexed), route_(loc.total_bytes.size(), kUnassigned),
        stamp_(loc.total_bytes.size(), 0), count_(m_, 0), listed_(indexed ? 0 : m_), pi_(m_ + 1, 0), dist_(m_ + 1, kInf),
        settled_(m_ + 1, 0), pred_(m_ + 1), pred_task_(m_ + 1), pred_entry_(m_ + 1),
        heap_(m_ + 1) {
    if (indexed_) {
      moves_.resize(static_cast<size_t>(m_) * (m_ + 1));
      targets_.resize(m_);
    }
  }

  // Node index per task, -1 for tasks that use no local bytes (the caller places them).
  std::vector<int32_t> Solve();

 private:
  int32_t Tasks() const { return static_cast<int32_t>(loc_.total_bytes.size()); }
  bool HasRoom(int32_t j) const { return count_[j] < caps_[j]; }
  int64_t BestEntry(int32_t t) const;
  void Place(int32_t t, int64_t entry);
  void Unplace(int32_t t);
  void IndexMoves(int32_t t, int64_t entry);
  void ListMoves(int32_t t, int64_t entry);
  void Augment(int32_t task);
  void RunDijkstra(int32_t task);
  void ApplyPath(int32_t terminal);
  void Relax(int32_t v, int64_t d, int32_t from, int32_t task, int64_t entry);
  void ExpandScan(int32_t v, int64_t d);
  void ExpandIndexed(int32_t v, int64_t d);

  const TaskLocality& loc_;
  const std::vector<int64_t>& caps_;
  const int32_t m_, u_;  // nodes 0..m-1; U = m: "uses no local bytes" (a terminal)
  const bool indexed_;
  std::vector<int64_t> route_;   // candidate entry, kUnmatched or kUnassigned
  std::vector<uint32_t> stamp_;  // bumped whenever the task moves (index mode)
  std::vector<int64_t> count_;   // matched tasks per node
  // Scan mode: per node, the moves of its tasks sorted by key (a search stops scanning at
  // the first move no shorter than the best terminal); unsorted during the warm start.
  std::vector<std::vector<ListedMove>> listed_;
  bool sorted_ = false;
  // Index mode: moves_[v * (m + 1) + k] = min-heap of the moves of tasks on v to k (k = U:
  // unmatch); targets_[v] = the k whose heap was ever used.
  std::vector<std::vector<Move>> moves_;
  std::vector<std::vector<int32_t>> targets_;
  std::vector<int64_t> pi_;  // potentials of nodes and U (U and nodes with room: 0)
  // Dijkstra scratch, reset through touched_.
  std::vector<int64_t> dist_;
  std::vector<char> settled_;
  std::vector<int32_t> pred_, pred_task_;
  std::vector<int64_t> pred_entry_;
  std::vector<int32_t> touched_, settled_list_;
  int64_t bound_ = kInf;  // least tentative distance of a terminal in this search
  IndexHeap heap_;
};

void Solver::Place(int32_t t, int64_t entry) {
  route_[t] = entry;
  ++stamp_[t];
  if (entry == kUnmatched) return;
  const int32_t v = loc_.node[entry];
  ++count_[v];
  if (indexed_) {
    IndexMoves(t, entry);
  } else {
    ListMoves(t, entry);
  }
}

void Solver::Unplace(int32_t t) {
  const int64_t entry = route_[t];
  route_[t] = kUnassigned;
  ++stamp_[t];
  if (entry < 0) return;
  const int32_t v = loc_.node[entry];
  --count_[v];
  if (!indexed_) {
    std::vector<ListedMove>& list = listed_[v];
    list.erase(std::remove_if(list.begin(), list.end(),
                              [t](const ListedMove& mv) { return mv.task == t; }),
               list.end());
  }
}

// Scan mode: adds the moves of task t, just placed through `entry`, to its node's list.
void Solver::ListMoves(int32_t t, int64_t entry) {
  std::vector<ListedMove>& list = listed_[loc_.node[entry]];
  auto add = [&](const ListedMove& mv) {
    if (sorted_) {
      list.insert(std::upper_bound(list.begin(), list.end(), mv), mv);
    } else {
      list.push_back(mv);
    }
  };
  for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
    if (e != entry) add(ListedMove{loc_.local[entry] - loc_.local[e], t, loc_.node[e], e});
  }
  add(ListedMove{loc_.local[entry], t, u_, kUnmatched});
}

// Index mode: records the moves of task t, just placed through `entry`, off its node.
void Solver::IndexMoves(int32_t t, int64_t entry) {
  const int32_t v = loc_.node[entry];
  auto push = [&](int32_t k, int64_t key) {
    std::vector<Move>& h = moves_[static_cast<size_t>(v) * (m_ + 1) + k];
    if (h.empty()) targets_[v].push_back(k);  // may repeat after h drained: harmless
    h.push_back(Move{key, t, stamp_[t]});
    std::push_heap(h.begin(), h.end(), std::greater<Move>());
  };
  for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
    if (e != entry) push(loc_.node[e], loc_.local[entry] - loc_.local[e]);
  }
  push(u_, loc_.local[entry]);
}

// Pruned: a vertex reached no sooner than the best terminal seen so far cannot lead to
// a shorter path (reduced costs are >= 0), so it is not queued.
inline void Solver::Relax(int32_t v, int64_t d, int32_t from, int32_t task, int64_t entry) {
  if (d >= bound_ || settled_[v] || d >= dist_[v]) return;
  if (v == u_ || HasRoom(v)) bound_ = d;
  if (dist_[v] == kInf) touched_.push_back(v);
  dist_[v] = d;
  pred_[v] = from;
  pred_task_[v] = task;
  pred_entry_[v] = entry;
  heap_.Push(v, d);
}

// Out of full node v, scanning its moves in key order: each task may move to another of
// its nodes, or to U (give up its local bytes). Potentials are <= 0, so once
// d + pi_v + key reaches the best terminal's distance no later move can be shorter.
void Solver::ExpandScan(int32_t v, int64_t d) {
  const int64_t base = d + pi_[v];
  for (const ListedMove& mv : listed_[v]) {
    if (base + mv.key >= bound_) break;
    assert(mv.key + pi_[v] - pi_[mv.target] >= 0);
    Relax(mv.target, base + mv.key - pi_[mv.target], v, mv.task, mv.entry);
  }
}

// Out of full node v, from the move index: the top of each (v, target) heap, after
// dropping moves of tasks that have moved since.
void Solver::ExpandIndexed(int32_t v, int64_t d) {
  const int64_t base = d + pi_[v];
  std::vector<int32_t>& targets = targets_[v];
  size_t keep = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    const int32_t k = targets[i];
    std::vector<Move>& h = moves_[static_cast<size_t>(v) * (m_ + 1) + k];
    while (!h.empty() && stamp_[h.front().task] != h.front().stamp) {
      std::pop_heap(h.begin(), h.end(), std::greater<Move>());
      h.pop_back();
    }
    if (h.empty()) continue;  // dropped from targets_; re-added on the next push
    targets[keep++] = k;
    const Move& best = h.front();
    int64_t entry = kUnmatched;
    if (k != u_) {
      for (int64_t e = loc_.offsets[best.task]; e < loc_.offsets[best.task + 1]; ++e) {
        if (loc_.node[e] == k) entry = e;
      }
    }
    Relax(k, base + best.key - pi_[k], v, best.task, entry);
  }
  targets.resize(keep);
}

// Dijkstra on reduced costs over nodes and U from the new task; stops at the first
// settled terminal: U, or a node with room (both keep the sink's potential 0, so nothing
// reaches the sink sooner). Returns through dist_/pred_.
void Solver::RunDijkstra(int32_t task) {
  const int64_t total = loc_.total_bytes[task];
  for (int64_t e = loc_.offsets[task]; e < loc_.offsets[task + 1]; ++e) {
    const int32_t k = loc_.node[e];
    Relax(k, total - loc_.local[e] - pi_[k], kSource, task, e);
  }
  Relax(u_, total - pi_[u_], kSource, task, kUnmatched);
  while (!heap_.empty()) {
    const int32_t v = heap_.Pop();
    const int64_t d = dist_[v];
    settled_[v] = 1;
    settled_list_.push_back(v);
    if (v == u_ || HasRoom(v)) {
      assert(pi_[v] == 0);
      return;
    }
    if (indexed_) {
      ExpandIndexed(v, d);
    } else {
      ExpandScan(v, d);
    }
  }
  assert(false);  // U is always reachable from the source
}

// Moves the tasks along the path found by RunDijkstra, terminal back to the source.
void Solver::ApplyPath(int32_t terminal) {
  for (int32_t v = terminal; v != kSource; v = pred_[v]) {
    const int32_t t = pred_task_[v];
    Unplace(t);
    Place(t, pred_entry_[v]);
  }
}

void Solver::Augment(int32_t task) {
  RunDijkstra(task);
  const int32_t terminal = settled_list_.back();
  const int64_t reach = dist_[terminal];
  for (int32_t v : settled_list_) pi_[v] += dist_[v] - reach;
  ApplyPath(terminal);
  for (int32_t v : touched_) dist_[v] = kInf, settled_[v] = 0;
  touched_.clear();
  settled_list_.clear();
  heap_.Clear();
  bound_ = kInf;
}

// The candidate entry with the most local bytes; ties: the node with more room left,
// then the lower node index. kUnmatched when no node holds any of its bytes.
int64_t Solver::BestEntry(int32_t t) const {
  int64_t best = kUnmatched;
  for (int64_t e = loc_.offsets[t]; e < loc_.offsets[t + 1]; ++e) {
    if (loc_.local[e] == 0) continue;
    if (best == kUnmatched || loc_.local[e] > loc_.local[best] ||
        (loc_.local[e] == loc_.local[best] &&
         caps_[loc_.node[e]] - count_[loc_.node[e]] >
             caps_[loc_.node[best]] - count_[loc_.node[best]])) {
      best = e;
    }
  }
  return best;
}

std::vector<int32_t> Solver::Solve() {
  std::vector<int32_t> deferred;
  for (int32_t t = 0; t < Tasks(); ++t) {
    const int64_t best = BestEntry(t);
    if (best == kUnmatched) {
      Place(t, kUnmatched);
    } else if (HasRoom(loc_.node[best])) {
      Place(t, best);
    } else {
      deferred.push_back(t);
    }
  }
  if (!indexed_) {
    for (std::vector<ListedMove>& list : listed_) std::sort(list.begin(), list.end());
    sorted_ = true;
  }
  for (int32_t t : deferred) Augment(t);
  std::vector<int32_t> node(Tasks(), -1);
  for (int32_t t = 0; t < Tasks(); ++t) {
    if (route_[t] >= 0) node[t] = loc_.node[route_[t]];
  }
  return node;
}

// Tasks renumbered so that those with the same best node (most local bytes, lowest
// index) are adjacent: a node's tasks then share cache lines when the solver scans them.
// Stable, so tasks with the same best node keep their index order.
TaskLocality GroupByBestNode(const TaskLocality& loc, int32_t num_nodes,
                             std::vector<int32_t>* order) {
  const size_t n = loc.total_bytes.size();
  std::vector<int32_t> key(n, num_nodes);  // num_nodes: no local bytes anywhere
  std::vector<int64_t> regret(n, 0);       // best local bytes - second best (or 0)
  std::vector<int32_t> start(num_nodes + 2, 0);
  for (size_t t = 0; t < n; ++t) {
    int64_t most = 0, second = 0;
    for (int64_t e = loc.offsets[t]; e < loc.offsets[t + 1]; ++e) {
      if (loc.local[e] > most) {
        second = most, most = loc.local[e], key[t] = loc.node[e];
      } else if (loc.local[e] > second) {
        second = loc.local[e];
      }
    }
    regret[t] = most - second;
    ++start[key[t] + 1];
  }
  for (int32_t j = 0; j <= num_nodes; ++j) start[j + 1] += start[j];
  order->assign(n, 0);
  for (size_t t = 0; t < n; ++t) (*order)[start[key[t]]++] = static_cast<int32_t>(t);
  // Within a node's group, the tasks that lose most by going elsewhere come first.
  for (int32_t j = 0; j < num_nodes; ++j) {
    const int32_t begin = j == 0 ? 0 : start[j - 1];
    std::stable_sort(order->begin() + begin, order->begin() + start[j],
                     [&](int32_t a, int32_t b) { return regret[a] > regret[b]; });
  }
  TaskLocality out;
  out.total_bytes.reserve(n);
  out.offsets.reserve(n + 1);
  out.node.reserve(loc.node.size());
  out.local.reserve(loc.local.size());
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

// Tasks that use no local bytes cost the same everywhere: in index order, each goes to
// the node with the most room left (ties: lower index), spreading them over the
// least-loaded nodes. sum caps >= n leaves room for all of them.
void FillRoom(const std::vector<int64_t>& caps, std::vector<int32_t>* node) {
  std::vector<int64_t> room(caps);
  for (int32_t j : *node) {
    if (j >= 0) --room[j];
  }
  std::priority_queue<std::pair<int64_t, int32_t>> most;  // (room, -index)
  for (size_t j = 0; j < room.size(); ++j) {
    if (room[j] > 0) most.emplace(room[j], -static_cast<int32_t>(j));
  }
  for (int32_t& j : *node) {
    if (j >= 0) continue;
    assert(!most.empty());
    auto [left, neg] = most.top();
    most.pop();
    j = -neg;
    if (left > 1) most.emplace(left - 1, neg);
  }
}

}  // namespace

std::vector<int32_t> SolveLocality(const TaskLocality& locality,
                                   const std::vector<int64_t>& caps, MoveIndex index) {
  const int32_t m = static_cast<int32_t>(caps.size());
  const int64_t n = static_cast<int64_t>(locality.total_bytes.size());
  const bool indexed = index == MoveIndex::kIndexed ||
                       (index == MoveIndex::kAuto && m <= kMaxIndexedNodes &&
                        n >= kMinTasksPerNodeIndexed * m);
  std::vector<int32_t> order;
  const TaskLocality grouped = GroupByBestNode(locality, m, &order);
  const std::vector<int32_t> placed = Solver(grouped, caps, indexed).Solve();
  std::vector<int32_t> node(placed.size());
  for (size_t i = 0; i < placed.size(); ++i) node[order[i]] = placed[i];
  FillRoom(caps, &node);
  return node;
}

}  // namespace irfront::scheduler
