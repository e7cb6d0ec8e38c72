-- Argo CD health of a Stronghold ScalingPolicy (ops.stronghold.io/v1alpha1).
-- The kstatus reading the operator writes for (docs/gitops.md): no status or an unseen
-- generation -> Progressing; Stalled=True -> Degraded; suspended -> Suspended;
-- Reconciling=True -> Progressing; Ready True -> Healthy, False -> Degraded, else Progressing.
-- Lua 5.1 as Argo CD's gopher-lua runs it (tested with lua5.1 and lua5.4).
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function isTrue(c, status, reason)
  return c ~= nil and c.status == status and (reason == nil or c.reason == reason)
end

local function say(c)
  local reason = c.reason or ""
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see this ScalingPolicy"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to see generation %d", generation)
  return hs
end
local stalled = condition("Stalled")
if isTrue(stalled, "True") then
  hs.status = "Degraded"
  hs.message = say(stalled)
  return hs
end
if (obj.spec ~= nil and obj.spec.paused == true) or isTrue(condition("ScalingActive"), "False", "Paused") then
  hs.status = "Suspended"
  hs.message = "paused (spec.paused or spec.pausedUntil): no scaling"
  return hs
end
local reconciling = condition("Reconciling")
if isTrue(reconciling, "True") then
  hs.status = "Progressing"
  hs.message = say(reconciling)
  return hs
end
local ready = condition("Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first pass"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Degraded"
end
hs.message = say(ready)
return hs
