// ClusterState: membership, group records, per-node load.
#include "src/scheduler/cluster_state.h"

#include <gtest/gtest.h>

namespace irfront::scheduler {
namespace {

class ClusterStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_.AddNode(2, 4.0);
    state_.AddNode(0, 4.0);
    state_.AddNode(1, 2.0);
  }
  ClusterState state_;
};

// Nodes are kept sorted by id whatever the insertion order.
TEST_F(ClusterStateTest, NodesSortedById) {
  ASSERT_EQ(state_.nodes().size(), 3u);
  EXPECT_EQ(state_.nodes()[0].id, 0);
  EXPECT_EQ(state_.nodes()[2].id, 2);
  EXPECT_EQ(state_.FindNode(1)->cpus, 2.0);
  EXPECT_EQ(state_.FindNode(7), nullptr);
}

// Dead nodes are left out of AliveNodes().
TEST_F(ClusterStateTest, AliveNodesSkipsDead) {
  state_.UpdateNode(1, 2.0, /*alive=*/false);
  const auto alive = state_.AliveNodes();
  ASSERT_EQ(alive.size(), 2u);
  EXPECT_EQ(alive[0].id, 0);
  EXPECT_EQ(alive[1].id, 2);
}

// Load counts live groups only; FreeGroup takes it back.
TEST_F(ClusterStateTest, LoadAndFreeGroup) {
  state_.RecordGroup(7, {0, 0, 2}, {1.0, 0.5, 2.0});
  state_.RecordGroup(8, {2}, {1.0});
  EXPECT_DOUBLE_EQ(state_.Load(0), 1.5);
  EXPECT_DOUBLE_EQ(state_.Load(2), 3.0);
  EXPECT_EQ(state_.group_count(), 2u);
  EXPECT_TRUE(state_.FreeGroup(7));
  EXPECT_DOUBLE_EQ(state_.Load(0), 0.0);
  EXPECT_DOUBLE_EQ(state_.Load(2), 1.0);
  EXPECT_EQ(state_.GroupNodes(7), nullptr);
  EXPECT_FALSE(state_.FreeGroup(7));
  EXPECT_EQ(state_.group_count(), 1u);
}

// Recording a group id again replaces its record and its load.
TEST_F(ClusterStateTest, RecordReplaces) {
  state_.RecordGroup(1, {0, 0}, {1.0, 1.0});
  state_.RecordGroup(1, {2}, {1.0});
  EXPECT_DOUBLE_EQ(state_.Load(0), 0.0);
  EXPECT_DOUBLE_EQ(state_.Load(2), 1.0);
  EXPECT_EQ(*state_.GroupNodes(1), std::vector<NodeId>({2}));
}

// Removing a node keeps the records of groups placed on it; freeing them still works.
TEST_F(ClusterStateTest, RemoveNodeKeepsGroupRecords) {
  state_.RecordGroup(3, {1, 2}, {1.0, 1.0});
  state_.RemoveNode(1);
  EXPECT_EQ(state_.FindNode(1), nullptr);
  EXPECT_EQ(*state_.GroupNodes(3), std::vector<NodeId>({1, 2}));
  EXPECT_TRUE(state_.FreeGroup(3));
  EXPECT_DOUBLE_EQ(state_.Load(2), 0.0);
}

}  // namespace
}  // namespace irfront::scheduler
