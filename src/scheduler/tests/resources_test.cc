// GPUs and custom resources as placement constraints: every policy places a group that
// demands them only on nodes whose capacity covers one task's demand.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "src/scheduler/placement_common.h"
#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::AddNodes;
using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

const PolicyKind kAllPolicies[] = {PolicyKind::kPack, PolicyKind::kLocality,
                                   PolicyKind::kSpread, PolicyKind::kActors};

std::set<NodeId> NodesOf(const SchedulingResult& result) {
  return std::set<NodeId>(result.nodes().begin(), result.nodes().end());
}

// Four 2-CPU nodes; node 2 has {"special": 2}; node 3 has 1 GPU.
class ResourcesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AddNodes(&s_, 2, 2.0);
    s_.AddNode(2, 2.0, {{"special", 2.0}});
    s_.AddNode(3, 2.0);
    s_.SetNodeResources(3, {{"GPU", 1.0}});
  }
  GroupScheduler s_;
};

TEST_F(ResourcesTest, NodeResourcesAreRecorded) {
  EXPECT_EQ(s_.state().FindNode(2)->resources, (ResourceMap{{"special", 2.0}}));
  EXPECT_EQ(s_.state().FindNode(3)->resources, (ResourceMap{{"GPU", 1.0}}));
  EXPECT_TRUE(s_.state().FindNode(0)->resources.empty());
  s_.UpdateNode(2, 4.0, true);  // CPUs and liveness leave the resources alone
  EXPECT_EQ(s_.state().FindNode(2)->resources, (ResourceMap{{"special", 2.0}}));
  s_.SetNodeResources(2, {});  // replaced, not merged
  EXPECT_TRUE(s_.state().FindNode(2)->resources.empty());
}

// Every policy: 8 tasks demanding special 1 all go to node 2, the only node with it,
// even with data elsewhere and a dependency group placed on other nodes.
TEST_F(ResourcesTest, EveryPolicyPlacesOnlyOnNodesWithTheResource) {
  ASSERT_TRUE(s_.Schedule(PlainRequest(1, 4), PolicyKind::kSpread).ok());  // on 0..3
  for (PolicyKind policy : kAllPolicies) {
    GroupRequest r = MakeRequest(
        2, std::vector<std::vector<In>>(8, {In{1000, {0}}, In{10, {}, 1, 0}}), 1.0, 1);
    r.task_resources = {{"special", 1.0}};
    auto result = s_.Schedule(r, policy);
    ASSERT_TRUE(result.ok()) << result.reason();
    EXPECT_EQ(NodesOf(result), std::set<NodeId>({2})) << static_cast<int>(policy);
    EXPECT_EQ(result.bytes_moved(), 8 * 1010) << static_cast<int>(policy);
  }
}

// GPUs are a resource like any other: "GPU" demand goes to node 3 only.
TEST_F(ResourcesTest, GpuDemandGoesToGpuNodes) {
  s_.AddNode(4, 8.0, {{"GPU", 4.0}});
  for (PolicyKind policy : kAllPolicies) {
    GroupRequest r = PlainRequest(1, 6, 1.0);
    r.task_resources = {{"GPU", 1.0}};
    auto result = s_.Schedule(r, policy);
    ASSERT_TRUE(result.ok()) << result.reason();
    EXPECT_EQ(NodesOf(result), std::set<NodeId>({3, 4})) << static_cast<int>(policy);
  }
}

// Among nodes with the resource, locality still follows the data.
TEST_F(ResourcesTest, LocalityFollowsDataAmongEligibleNodes) {
  s_.SetNodeResources(0, {{"special", 2.0}});
  GroupRequest r = MakeRequest(1, {{In{100, {2}}}, {In{100, {0}}}, {In{100, {1}}}});
  r.task_resources = {{"special", 1.0}};
  auto result = s_.Schedule(r, PolicyKind::kLocality);
  ASSERT_TRUE(result.ok()) << result.reason();
  EXPECT_EQ(result.nodes()[0], 2);
  EXPECT_EQ(result.nodes()[1], 0);
  EXPECT_NE(result.nodes()[2], 1);  // node 1 has no "special": its data moves
  EXPECT_EQ(result.bytes_moved(), 100);
}

// A demand of several resources needs a node with all of them.
TEST_F(ResourcesTest, EveryDemandedResourceMustBeThere) {
  s_.AddNode(4, 2.0, {{"GPU", 1.0}, {"special", 1.0}});
  GroupRequest r = PlainRequest(1, 3);
  r.task_resources = {{"GPU", 1.0}, {"special", 1.0}};
  for (PolicyKind policy : kAllPolicies) {
    auto result = s_.Schedule(r, policy);
    ASSERT_TRUE(result.ok()) << result.reason();
    EXPECT_EQ(NodesOf(result), std::set<NodeId>({4}));
  }
}

// A zero demand is no demand.
TEST_F(ResourcesTest, ZeroDemandIsNoConstraint) {
  GroupRequest r = PlainRequest(1, 8, 0.0);
  r.task_resources = {{"GPU", 0.0}};
  auto result = s_.Schedule(r, PolicyKind::kSpread);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(NodesOf(result), std::set<NodeId>({0, 1, 2, 3}));
}

// No node can host the group: infeasible, the reason names the resource and each node's
// shortfall; nothing is recorded.
TEST_F(ResourcesTest, NoNodeWithTheResourceIsInfeasible) {
  for (PolicyKind policy : kAllPolicies) {
    GroupRequest r = PlainRequest(1, 2);
    r.task_resources = {{"special", 3.0}};
    auto result = s_.Schedule(r, policy);
    ASSERT_FALSE(result.ok());
    const std::string& why = result.reason();
    EXPECT_NE(why.find("no alive node has the resources each task needs (special 3)"),
              std::string::npos) << why;
    EXPECT_NE(why.find("node 0: special 0 < 3"), std::string::npos) << why;
    EXPECT_NE(why.find("node 2: special 2 < 3"), std::string::npos) << why;
    EXPECT_EQ(s_.state().group_count(), 0u);
  }
  GroupRequest gpus = PlainRequest(1, 1);
  gpus.task_resources = {{"GPU", 2.0}};
  auto result = s_.Schedule(gpus, PolicyKind::kLocality);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.reason().find("node 3: GPU 1 < 2"), std::string::npos) << result.reason();
}

// A dead node's resources do not count.
TEST_F(ResourcesTest, DeadNodeWithTheResourceIsNotACandidate) {
  s_.UpdateNode(2, 2.0, false);
  GroupRequest r = PlainRequest(1, 1);
  r.task_resources = {{"special", 1.0}};
  auto result = s_.Schedule(r, PolicyKind::kLocality);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.reason().find("special"), std::string::npos);
  EXPECT_EQ(result.reason().find("node 2"), std::string::npos) << result.reason();
}

// The node with the resource is too small for a task's CPUs: infeasible, naming it.
TEST_F(ResourcesTest, TaskLargerThanEveryEligibleNodeIsInfeasible) {
  s_.AddNode(4, 16.0);
  GroupRequest r = PlainRequest(1, 1, 4.0);
  r.task_resources = {{"special", 1.0}};
  for (PolicyKind policy : kAllPolicies) {
    auto result = s_.Schedule(r, policy);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.reason().find("the largest alive node with special 1 has 2"),
              std::string::npos) << result.reason();
  }
}

// Caps follow what the resources run at once: 10 one-GPU tasks on a node with 4 GPUs and
// one with 1 GPU (same CPUs) are shared 8 and 2 by locality and spread.
TEST_F(ResourcesTest, CapsFollowResourceSlots) {
  GroupScheduler s;
  s.AddNode(0, 8.0, {{"GPU", 4.0}});
  s.AddNode(1, 8.0, {{"GPU", 1.0}});
  for (PolicyKind policy : {PolicyKind::kLocality, PolicyKind::kSpread}) {
    GroupRequest r = PlainRequest(1, 10, 1.0);
    r.task_resources = {{"GPU", 1.0}};
    auto result = s.Schedule(r, policy);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result.task_counts(), (std::map<NodeId, int64_t>{{0, 8}, {1, 2}}))
        << static_cast<int>(policy);
  }
  const NodeInfo node{0, 8.0, true, {{"GPU", 4.0}, {"x", 1.5}}};
  EXPECT_EQ(ResourceSlots(node, {{"GPU", 1.0}}), 4.0);
  EXPECT_EQ(ResourceSlots(node, {{"GPU", 0.5}, {"x", 1.0}}), 1.0);
  EXPECT_EQ(ResourceSlots(node, {{"GPU", 0.3}}), 13.0);
  EXPECT_EQ(ResourceSlots(node, {{"y", 1.0}}), 0.0);
}

// Pack fills a node only while its resources have a slot for this group's tasks: one
// "special" slot on node 0, two on node 1.
TEST_F(ResourcesTest, PackCountsResourceSlots) {
  GroupScheduler s;
  s.AddNode(0, 8.0, {{"special", 1.0}});
  s.AddNode(1, 8.0, {{"special", 2.0}});
  GroupRequest r = PlainRequest(1, 3, 1.0);
  r.task_resources = {{"special", 1.0}};
  auto result = s.Schedule(r, PolicyKind::kPack);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 1, 1}));
}

TEST_F(ResourcesTest, BadResourcesAreRejected) {
  EXPECT_THROW(s_.AddNode(9, 1.0, {{"", 1.0}}), std::invalid_argument);
  EXPECT_THROW(s_.AddNode(9, 1.0, {{"CPU", 1.0}}), std::invalid_argument);
  EXPECT_THROW(s_.SetNodeResources(0, {{"GPU", -1.0}}), std::invalid_argument);
  EXPECT_THROW(s_.SetNodeResources(42, {{"GPU", 1.0}}), std::invalid_argument);
  EXPECT_EQ(s_.state().FindNode(9), nullptr);  // a rejected call changes nothing
  GroupRequest r = PlainRequest(1, 1);
  r.task_resources = {{"GPU", std::nan("")}};
  try {
    s_.Schedule(r, PolicyKind::kLocality);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("task_resources[\"GPU\"]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace irfront::scheduler
