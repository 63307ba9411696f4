// Test oracle: a plain min-cost flow (successive shortest paths with Bellman-Ford) on the
// full bipartite graph task -> every node (cost = bytes moved), node -> sink (cap = the node's cap;
// caps may add up to more than the number of tasks).
// Slow (O(n^2 m)) and independent of the production solver's structure.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace irfront::scheduler::testing {

// cost[t][j]: bytes moved if task t runs on node j. Returns the optimal total cost.
inline int64_t ReferenceMinCost(const std::vector<std::vector<int64_t>>& cost,
                                const std::vector<int64_t>& caps) {
  const int n = static_cast<int>(cost.size()), m = static_cast<int>(caps.size());
  const int src = n + m, sink = n + m + 1, vertices = n + m + 2;
  struct Edge { int to; int64_t cap, cost; };
  std::vector<Edge> edges;
  std::vector<std::vector<int>> out(vertices);
  auto add = [&](int u, int v, int64_t cap, int64_t c) {
    out[u].push_back(static_cast<int>(edges.size()));
    edges.push_back({v, cap, c});
    out[v].push_back(static_cast<int>(edges.size()));
    edges.push_back({u, 0, -c});
  };
  for (int t = 0; t < n; ++t) {
    add(src, t, 1, 0);
    for (int j = 0; j < m; ++j) add(t, n + j, 1, cost[t][j]);
  }
  for (int j = 0; j < m; ++j) add(n + j, sink, caps[j], 0);
  int64_t total = 0;
  const int64_t inf = std::numeric_limits<int64_t>::max() / 4;
  for (int unit = 0; unit < n; ++unit) {
    std::vector<int64_t> dist(vertices, inf);
    std::vector<int> via(vertices, -1);
    dist[src] = 0;
    for (bool changed = true; changed;) {
      changed = false;
      for (int u = 0; u < vertices; ++u) {
        if (dist[u] == inf) continue;
        for (int e : out[u]) {
          if (edges[e].cap > 0 && dist[u] + edges[e].cost < dist[edges[e].to]) {
            dist[edges[e].to] = dist[u] + edges[e].cost;
            via[edges[e].to] = e;
            changed = true;
          }
        }
      }
    }
    if (dist[sink] == inf) return -1;
    for (int v = sink; v != src; v = edges[via[v] ^ 1].to) {
      edges[via[v]].cap -= 1;
      edges[via[v] ^ 1].cap += 1;
    }
    total += dist[sink];
  }
  return total;
}

}  // namespace irfront::scheduler::testing
