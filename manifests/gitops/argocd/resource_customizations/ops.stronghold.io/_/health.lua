-- Argo CD health of every Stronghold kind (ops.stronghold.io/*, one script for all kinds).
-- The kstatus reading the operator writes for (docs/gitops.md): no status or an unseen
-- generation -> Progressing; Stalled=True -> Degraded; suspended -> Suspended;
-- Reconciling=True -> Progressing; Ready True -> Healthy, False -> Degraded, else Progressing.
-- Lua 5.1 as Argo CD's gopher-lua runs it (tested with lua5.1 and lua5.4).
local hs = {}

-- Kinds the operator writes as records (never in Git, no Ready condition): an Incident is
-- history under its HealthPolicy, which reports an open one itself (IncidentOpen). Nothing
-- there converges, so whatever its state it is Healthy, never Progressing forever.
local records = { Incident = true }

-- What a suspended object of each kind stops doing; ScalingPolicy says "paused" instead.
local suspends = {
  BackupSchedule = "no scheduled backups",
  HealthPolicy = "no checks run",
  MaintenanceWindow = "no windows open",
}

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

local function answer(status, message)
  hs.status = status
  hs.message = message
  return hs
end

-- The Suspended message for this object, or nil when it is not suspended.
local function suspended()
  if obj.spec == nil then
    return nil
  end
  if obj.kind == "ScalingPolicy" then
    if obj.spec.paused == true or isTrue(condition("ScalingActive"), "False", "Paused") then
      return "paused (spec.paused or spec.pausedUntil): no scaling"
    end
    return nil
  end
  if obj.spec.suspend == true then
    local what = suspends[obj.kind]
    if what == nil then
      return "spec.suspend is true"
    end
    return "spec.suspend is true: " .. what
  end
  return nil
end

if records[obj.kind] then
  local state = "not written yet"
  if obj.status ~= nil and obj.status.state ~= nil then
    state = obj.status.state
  end
  local id = ""
  if obj.spec ~= nil and obj.spec.id ~= nil then
    id = " " .. obj.spec.id
  end
  local what = obj.kind .. id .. " is " .. state
  return answer("Healthy", what .. ": a record the operator keeps, nothing to converge")
end
if obj.status == nil or obj.status.observedGeneration == nil then
  return answer("Progressing", "Waiting for the operator to see this " .. obj.kind)
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  local waiting = string.format("Waiting for the operator to see generation %d", generation)
  return answer("Progressing", waiting)
end
-- Stalled, then suspended, then Reconciling: the first that holds decides.
local stalled, reconciling = condition("Stalled"), condition("Reconciling")
if isTrue(stalled, "True") then
  return answer("Degraded", say(stalled))
end
local paused = suspended()
if paused ~= nil then
  return answer("Suspended", paused)
end
if isTrue(reconciling, "True") then
  return answer("Progressing", say(reconciling))
end
local ready = condition("Ready")
if ready == nil or ready.status == "Unknown" then
  return answer("Progressing", "Waiting for the operator's first pass")
end
if ready.status == "True" then
  return answer("Healthy", say(ready))
end
return answer("Degraded", say(ready))
