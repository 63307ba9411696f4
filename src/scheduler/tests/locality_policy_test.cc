// Locality policy: exact minimum of bytes moved under fair-share caps.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "src/scheduler/locality_solver.h"
#include "src/scheduler/placement_common.h"
#include "src/scheduler/tests/reference_flow.h"
#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::AddNodes;
using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

class LocalityPolicyTest : public ::testing::Test {
 protected:
  SchedulingResult Place(const GroupRequest& r) { return s_.Schedule(r, PolicyKind::kLocality); }
  GroupScheduler s_;
};

// Hand-checked: 4 tasks on 2 equal nodes (caps 2 + 2); each task goes to its data.
TEST_F(LocalityPolicyTest, SmallHandChecked) {
  AddNodes(&s_, 2, 2.0);
  auto result = Place(MakeRequest(1, {{In{100, {0}}}, {In{50, {1}}, In{10, {0}}},
                                       {In{70, {1}}}, {In{30, {0}}}}));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 1, 1, 0}));
  EXPECT_EQ(result.bytes_moved(), 10);
}

// Greedy in task order would put task 0 on node 0 (10 > 9 bytes) and move 109 bytes;
// the optimum gives node 0 to task 1 and moves 10.
TEST_F(LocalityPolicyTest, BeatsGreedy) {
  AddNodes(&s_, 2, 1.0);
  auto result = Place(MakeRequest(1, {{In{10, {0}}, In{9, {1}}}, {In{100, {0}}}}));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({1, 0}));
  EXPECT_EQ(result.bytes_moved(), 10);
}

// A cap is an upper bound, not a quota: a lone task goes to its data on node 2 (caps
// are ceil(1/3) = 1 everywhere; an exact quota would have forced it onto node 0).
TEST_F(LocalityPolicyTest, LoneTaskGoesToItsData) {
  AddNodes(&s_, 3, 2.0);
  auto result = Place(MakeRequest(1, {{In{100, {2}}}}));
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({2}));
  EXPECT_EQ(result.bytes_moved(), 0);
}

// Tasks without data go to the nodes with the most room left: 10 tasks on 4 equal nodes
// (caps 3) give 3, 3, 2, 2, not 3, 3, 3, 1.
TEST_F(LocalityPolicyTest, TasksWithoutDataSpreadOverRoom) {
  AddNodes(&s_, 4, 2.0);
  auto result = Place(PlainRequest(1, 10));
  EXPECT_EQ(result.task_counts(), (std::map<NodeId, int64_t>{{0, 3}, {1, 3}, {2, 2}, {3, 2}}));
}

// No node takes more than its cap, even when all the data is on one node.
TEST_F(LocalityPolicyTest, ShareBound) {
  AddNodes(&s_, 3, 2.0);
  std::vector<std::vector<In>> tasks(6, {In{100, {0}}});
  auto result = Place(MakeRequest(1, tasks));
  for (const auto& [node, count] : result.task_counts()) EXPECT_EQ(count, 2) << node;
  EXPECT_EQ(result.bytes_moved(), 400);
}

// Caps follow free CPU: load of a live group reduces a node's cap.
TEST_F(LocalityPolicyTest, SharesFollowFreeCpu) {
  AddNodes(&s_, 2, 4.0);
  ASSERT_TRUE(s_.Schedule(PlainRequest(1, 2, 1.0), PolicyKind::kPack).ok());  // node 0: 2
  auto result = Place(PlainRequest(2, 6, 1.0));  // free CPU 2 vs 4 -> caps 2 and 4
  EXPECT_EQ(result.task_counts().at(0), 2);
  EXPECT_EQ(result.task_counts().at(1), 4);
}

// A dead node is never chosen, even when it holds the data.
TEST_F(LocalityPolicyTest, SkipsDeadNodes) {
  AddNodes(&s_, 3, 2.0);
  s_.UpdateNode(1, 2.0, /*alive=*/false);
  auto result = Place(MakeRequest(1, {{In{100, {1}}}, {In{100, {1}}}}));
  for (NodeId node : result.nodes()) EXPECT_NE(node, 1);
  EXPECT_EQ(result.bytes_moved(), 200);
}

// Inputs located by producer task follow the producer's recorded node.
TEST_F(LocalityPolicyTest, ProducerLocations) {
  AddNodes(&s_, 2, 2.0);
  ASSERT_TRUE(s_.Schedule(PlainRequest(1, 2, 0.0), PolicyKind::kSpread).ok());  // 0, 1
  auto result = Place(MakeRequest(2, {{In{5, {}, 1, 1}}, {In{5, {}, 1, 0}}}));
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({1, 0}));
  EXPECT_EQ(result.bytes_moved(), 0);
}

// Same request, fresh schedulers: same placement (ties go to the lower node id).
TEST_F(LocalityPolicyTest, Deterministic) {
  std::vector<std::vector<In>> tasks(8, {In{7, {0, 1, 2}}});
  GroupScheduler other;
  AddNodes(&s_, 4, 2.0);
  AddNodes(&other, 4, 2.0);
  auto a = Place(MakeRequest(1, tasks));
  auto b = other.Schedule(MakeRequest(1, tasks), PolicyKind::kLocality);
  EXPECT_EQ(a.nodes(), b.nodes());
}

// Caps are exact ceilings: n = 7 on free CPU 1 and 2 gives ceil(7/3) = 3 and
// ceil(14/3) = 5 (sum 8 >= 7).
TEST_F(LocalityPolicyTest, CapsAreExactCeilings) {
  s_.AddNode(0, 1.0);
  s_.AddNode(1, 2.0);
  const NodeView view = MakeNodeView(s_.state(), 1, 1.0);
  EXPECT_EQ(FreeCpuCaps(view, 7), std::vector<int64_t>({3, 5}));
  EXPECT_EQ(FreeCpuCaps(view, 6), std::vector<int64_t>({2, 4}));  // exact: no rounding
  EXPECT_EQ(EqualCaps(view, 7), std::vector<int64_t>({4, 4}));
}

// A task larger than every alive node: infeasible with a reason.
TEST_F(LocalityPolicyTest, Infeasible) {
  AddNodes(&s_, 2, 2.0);
  auto result = Place(PlainRequest(1, 2, 3.0));
  EXPECT_FALSE(result.ok());
  EXPECT_FALSE(result.reason().empty());
}

// Random instances: bytes moved equal an independent min-cost flow's optimum under the
// same caps, and no node exceeds its cap.
TEST_F(LocalityPolicyTest, MatchesReferenceOptimum) {
  for (int trial = 0; trial < 200; ++trial) {
    std::mt19937_64 rng(trial);
    const int n = 1 + rng() % 30, m = 1 + rng() % 6;
    GroupScheduler s;
    for (int j = 0; j < m; ++j) s.AddNode(j, 1.0 + rng() % 4);
    std::vector<std::vector<In>> tasks(n);
    for (auto& inputs : tasks) {
      for (int k = rng() % 4; k > 0; --k) {
        In in{static_cast<int64_t>(trial % 2 ? rng() % 1000 : rng() % 3), {}};
        for (int l = rng() % 3; l > 0; --l) in.nodes.push_back(rng() % m);
        inputs.push_back(in);
      }
    }
    const GroupRequest r = MakeRequest(1, tasks);
    const NodeView view = MakeNodeView(s.state(), 1, 1.0);
    const TaskLocality loc = ComputeLocality(s.state(), r, view);
    const auto caps = FreeCpuCaps(view, n);
    std::vector<std::vector<int64_t>> cost(n, std::vector<int64_t>(m));
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < m; ++j) cost[t][j] = loc.total_bytes[t] - loc.LocalBytes(t, j);
    }
    const auto result = s.Schedule(r, PolicyKind::kLocality);
    EXPECT_EQ(result.bytes_moved(), testing::ReferenceMinCost(cost, caps)) << trial;
    for (int j = 0; j < m; ++j) {
      const auto it = result.task_counts().find(j);
      EXPECT_LE(it == result.task_counts().end() ? 0 : it->second, caps[j]) << trial;
    }
  }
}

// Both ways of finding the cheapest move off a full node (task scan, move index) reach
// the reference optimum, within the caps, on small random instances.
TEST_F(LocalityPolicyTest, ScanAndIndexMatchReference) {
  for (int trial = 0; trial < 200; ++trial) {
    std::mt19937_64 rng(1000 + trial);
    const int n = 1 + rng() % 40, m = 1 + rng() % 6;
    GroupScheduler s;
    for (int j = 0; j < m; ++j) s.AddNode(j, 1.0 + rng() % 4);
    std::vector<std::vector<In>> tasks(n);
    for (auto& inputs : tasks) {
      for (int k = rng() % 4; k > 0; --k) {
        In in{static_cast<int64_t>(trial % 2 ? rng() % 1000 : rng() % 3), {}};
        for (int l = rng() % 3; l > 0; --l) in.nodes.push_back(rng() % m);
        inputs.push_back(in);
      }
    }
    const GroupRequest r = MakeRequest(1, tasks);
    const NodeView view = MakeNodeView(s.state(), 1, 1.0);
    const TaskLocality loc = ComputeLocality(s.state(), r, view);
    const auto caps = FreeCpuCaps(view, n);
    std::vector<std::vector<int64_t>> cost(n, std::vector<int64_t>(m));
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < m; ++j) cost[t][j] = loc.total_bytes[t] - loc.LocalBytes(t, j);
    }
    const int64_t optimum = testing::ReferenceMinCost(cost, caps);
    for (MoveIndex index : {MoveIndex::kScan, MoveIndex::kIndexed}) {
      const std::vector<int32_t> node = SolveLocality(loc, caps, index);
      std::vector<int64_t> count(m, 0);
      int64_t moved = 0;
      for (int t = 0; t < n; ++t) ++count[node[t]], moved += cost[t][node[t]];
      EXPECT_EQ(moved, optimum) << trial;
      for (int j = 0; j < m; ++j) EXPECT_LE(count[j], caps[j]) << trial;
    }
  }
}

// Larger groups (many tasks per node, where the move index is used): scan and index give
// the same bytes moved.
TEST_F(LocalityPolicyTest, ScanAndIndexAgreeOnLargeGroups) {
  for (int trial = 0; trial < 6; ++trial) {
    std::mt19937_64 rng(trial);
    const int n = 3000, m = 4 + trial * 6;
    GroupScheduler s;
    for (int j = 0; j < m; ++j) s.AddNode(j, 4.0);
    std::vector<std::vector<In>> tasks(n);
    for (auto& inputs : tasks) {
      for (int k = 0; k < 1 + trial % 3; ++k) {
        inputs.push_back(In{static_cast<int64_t>(1 + rng() % 1000),
                            {static_cast<NodeId>(rng() % m)}});
      }
    }
    const GroupRequest r = MakeRequest(1, tasks);
    const NodeView view = MakeNodeView(s.state(), 1, 1.0);
    const TaskLocality loc = ComputeLocality(s.state(), r, view);
    const auto caps = FreeCpuCaps(view, n);
    int64_t moved[2] = {0, 0};
    int i = 0;
    for (MoveIndex index : {MoveIndex::kScan, MoveIndex::kIndexed}) {
      const std::vector<int32_t> node = SolveLocality(loc, caps, index);
      for (int t = 0; t < n; ++t) moved[i] += loc.total_bytes[t] - loc.LocalBytes(t, node[t]);
      ++i;
    }
    EXPECT_EQ(moved[0], moved[1]) << trial;
  }
}

// Placing a group id again replaces its record (and its load does not count against it).
TEST_F(LocalityPolicyTest, ReplacingAGroupReplacesItsRecord) {
  AddNodes(&s_, 2, 2.0);
  ASSERT_TRUE(Place(PlainRequest(1, 2)).ok());
  ASSERT_TRUE(Place(PlainRequest(1, 4)).ok());
  EXPECT_EQ(s_.state().group_count(), 1u);
  EXPECT_EQ(s_.state().GroupNodes(1)->size(), 4u);
  EXPECT_DOUBLE_EQ(s_.state().Load(0) + s_.state().Load(1), 4.0);
}

}  // namespace
}  // namespace irfront::scheduler
