// The Elysia app: routes, API-key check, and every error in OpenAI's shape (never Elysia's 422 echo).
import { Elysia } from "elysia";
import type { ServerContext } from "./context.ts";
import { ApiError, errorResponse } from "./errors.ts";
import { handleCompletion } from "./openai.ts";
import { handleDetokenize, handleFlush, handleGenerate, handleTokenize } from "./native.ts";

export const MAX_BODY_BYTES = 8 * 1024 * 1024;
const STALL_SECONDS = 30; // live requests but no engine step for this long → unhealthy

function health(ctx: ServerContext): Response {
  if (!ctx.state.ready) {
    return Response.json({ error: { code: 503, message: "Loading model", type: "unavailable_error" } }, { status: 503 });
  }
  const stalled = ctx.client.liveRequests > 0 && performance.now() - ctx.metrics.lastStepAt > STALL_SECONDS * 1000;
  if (ctx.state.stopping || stalled) {
    return Response.json({ error: { code: 503, message: stalled ? "Engine stopped stepping" : "Shutting down", type: "unavailable_error" } },
      { status: 503 });
  }
  return Response.json({ status: "ok" });
}

function modelCard(ctx: ServerContext) {
  return { id: ctx.modelName, object: "model", created: ctx.state.created, owned_by: "minisgl", max_model_len: ctx.maxSeqLen };
}

export function createApp(ctx: ServerContext) {
  // Bun's own limit (an empty 413) sits above ours, so declared sizes get an OpenAI-shaped 413 first.
  return new Elysia({ serve: { maxRequestBodySize: 4 * MAX_BODY_BYTES } })
    .onRequest(({ request }) => {
      const length = Number(request.headers.get("content-length") ?? 0);
      if (length > MAX_BODY_BYTES) return errorResponse(new ApiError(413, `request body over ${MAX_BODY_BYTES} bytes`));
      const path = new URL(request.url).pathname;
      if (ctx.apiKey && path !== "/health" && request.headers.get("authorization") !== `Bearer ${ctx.apiKey}`) {
        return errorResponse(new ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", null, "invalid_api_key"));
      }
      if (!ctx.state.ready && path !== "/health") return errorResponse(new ApiError(503, "the model is still loading"));
    })
    .onError(({ code, error }) => {
      if (error instanceof ApiError) return errorResponse(error);
      if (code === "PARSE") return errorResponse(new ApiError(400, "the request body is not valid JSON"));
      if (code === "NOT_FOUND") return errorResponse(new ApiError(404, "no such route"));
      if (code === "VALIDATION") return errorResponse(new ApiError(400, "invalid request"));
      console.error("unhandled error:", error);
      return errorResponse(new ApiError(500, error instanceof Error ? error.message : "internal error"));
    })
    .get("/health", () => health(ctx))
    .get("/metrics", () => new Response(ctx.metrics.render(ctx.modelName, ctx.client.liveRequests), {
      headers: { "content-type": "text/plain; version=0.0.4" },
    }))
    .get("/v1/models", () => ({ object: "list", data: [modelCard(ctx)] }))
    .get("/v1/models/*", ({ params }) => {
      if (params["*"] !== ctx.modelName) throw new ApiError(404, `The model '${params["*"]}' does not exist`, "model", "model_not_found");
      return modelCard(ctx);
    })
    .post("/v1/completions", ({ body, request }) => handleCompletion(ctx, body, request.signal, "completions"))
    .post("/v1/chat/completions", ({ body, request }) => handleCompletion(ctx, body, request.signal, "chat"))
    .post("/generate", ({ body, request }) => handleGenerate(ctx, body, request.signal))
    .post("/flush_cache", () => handleFlush(ctx))
    .post("/v1/tokenize", ({ body }) => handleTokenize(ctx, body))
    .post("/v1/detokenize", ({ body }) => handleDetokenize(ctx, body));
}
