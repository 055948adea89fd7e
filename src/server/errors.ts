// OpenAI-shaped errors: {"error":{"message","type","param","code"}} with the right HTTP status.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 401 ? "authentication_error" : status === 404 ? "not_found_error"
      : status >= 500 ? "server_error" : "invalid_request_error",
  ) {
    super(message);
  }

  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function errorResponse(e: ApiError, headers: Record<string, string> = {}): Response {
  if (e.status === 503) headers["retry-after"] ??= "1";
  return Response.json(e.body(), { status: e.status, headers });
}

export const badRequest = (message: string, param: string | null = null) => new ApiError(400, message, param);
