-- Argo CD health check for tracking-operator.io/TrackingPipeline (Lua 5.1).
--
-- Follows kstatus so Argo CD, Flux and `helm --wait` agree:
--   Degraded    Stalled=True, or Ready=False with a reason that retrying will not fix
--               (a name conflict, an invalid spec, AWS refusing access or the request)
--   Progressing no status yet, a generation the operator has not observed, Reconciling=True,
--               Ready=Unknown, or Ready=False with a transient reason (a pending e-mail
--               confirmation, AWS still provisioning, a throttled or unreachable AWS API)
--   Healthy     Ready=True for the current generation
-- Transient failures must stay Progressing, not Degraded, or sync waves stop on them.

-- Reasons on Ready=False that need a person. The operator also sets Stalled=True for these.
local terminal_reasons = {
  Conflict = true,
  InvalidSpec = true,
}

-- AWS error codes (the operator writes "<part>: <Code>: <detail>" with reason AwsError) that no
-- retry fixes: missing permissions or credentials, a request AWS refuses, an account limit.
-- The same list as TERMINAL_CODES in src/aws/error.rs (tests/health_lua.rs checks it); the
-- operator sets Stalled=True for these too. LimitExceededException is a request rate
-- (DynamoDB, KMS) and passes: it stays Progressing.
local terminal_aws_codes = {
  "AccessDenied", "AccessDeniedException", "AuthorizationError", "AuthorizationErrorException",
  "UnauthorizedOperation", "UnrecognizedClientException", "InvalidClientTokenId",
  "KMSAccessDeniedException", "InvalidParameterValue", "InvalidParameterValueException",
  "InvalidParameterException", "ValidationException", "ValidationError",
  "LimitExceeded", "OverLimit",
}

local function terminal_aws_error(c)
  if c == nil or c.reason ~= "AwsError" or c.message == nil then
    return false
  end
  for _, code in ipairs(terminal_aws_codes) do
    if string.find(c.message, code .. ":", 1, true) ~= nil then
      return true
    end
  end
  return false
end

local function find_condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: the operator is cleaning up the pipeline's resources"
  return hs
end

if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local stalled = find_condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = find_condition(conditions, "Ready")
local reconciling = find_condition(conditions, "Reconciling")

if ready ~= nil and ready.status == "False" and (terminal_reasons[ready.reason or ""] or terminal_aws_error(ready)) then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, describe(ready, "Reconciling"))
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- A Ready condition written for an older generation says nothing about the current spec.
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Not ready yet")
return hs
