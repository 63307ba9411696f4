// Pack policy: the 2018 draft's rule.
#include <gtest/gtest.h>

#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::AddNodes;
using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

class PackPolicyTest : public ::testing::Test {
 protected:
  // Group 1 = two 3-CPU tasks on nodes 2 and 3 (nodes 0 and 1 were down meanwhile).
  void PlaceGroupOnNodes2And3() {
    AddNodes(&s_, 4, 4.0);
    s_.UpdateNode(0, 4.0, /*alive=*/false);
    s_.UpdateNode(1, 4.0, /*alive=*/false);
    ASSERT_EQ(s_.Schedule(PlainRequest(1, 2, 3.0), PolicyKind::kPack).nodes(),
              std::vector<NodeId>({2, 3}));
    s_.UpdateNode(0, 4.0, /*alive=*/true);
    s_.UpdateNode(1, 4.0, /*alive=*/true);
  }
  GroupScheduler s_;
};

// Tasks go to the dependency's nodes while they have free slots, then overflow in id order.
TEST_F(PackPolicyTest, FollowsDependencyNodesThenOverflowsInOrder) {
  PlaceGroupOnNodes2And3();
  auto result = s_.Schedule(PlainRequest(2, 4, 1.0, /*depends_on=*/1), PolicyKind::kPack);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({2, 3, 0, 0}));
}

// When every node is full, the least-loaded node (this group's tasks included) wins.
TEST_F(PackPolicyTest, FallsBackToLeastLoaded) {
  s_.AddNode(0, 2.0);
  s_.AddNode(1, 1.0);
  auto result = s_.Schedule(PlainRequest(1, 5, 1.0), PolicyKind::kPack);
  ASSERT_TRUE(result.ok());
  // 0, 0, 1 fill the slots; then loads 2 vs 1 -> node 1; then 2 vs 2 -> lowest id 0.
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 0, 1, 1, 0}));
}

// A task whose inputs name exactly one producer task goes where that producer went.
TEST_F(PackPolicyTest, SingleProducerTaskIsFollowed) {
  PlaceGroupOnNodes2And3();
  auto request = MakeRequest(2, {{In{10, {}, 1, 1}}, {In{10, {}, 1, 0}, In{10, {}, 1, 1}}});
  auto result = s_.Schedule(request, PolicyKind::kPack);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes()[0], 3);  // its one producer is on node 3
  EXPECT_EQ(result.nodes()[1], 0);  // two producers: the ordinary rule (no dependency)
}

// A producer on a dead node is not followed.
TEST_F(PackPolicyTest, ProducerOnDeadNodeIsNotFollowed) {
  PlaceGroupOnNodes2And3();
  s_.UpdateNode(3, 4.0, /*alive=*/false);
  auto result = s_.Schedule(MakeRequest(2, {{In{10, {}, 1, 1}}}), PolicyKind::kPack);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0}));
}

// A task larger than every alive node is infeasible, and nothing is recorded.
TEST_F(PackPolicyTest, Infeasible) {
  AddNodes(&s_, 2, 4.0);
  auto result = s_.Schedule(PlainRequest(1, 1, 8.0), PolicyKind::kPack);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason().find("needs 8 CPUs"), std::string::npos);
  EXPECT_EQ(s_.state().group_count(), 0u);
}

}  // namespace
}  // namespace irfront::scheduler
